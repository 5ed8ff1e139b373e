//! Discord webhooks (embeds).
//!
//! Discord rejects a message that breaks one of its embed limits (HTTP 400), so every text is cut
//! to fit: title 256, description 4096, 25 fields of name 256 and value 1024, footer 2048, and
//! 6000 characters across the whole embed. `allowed_mentions` is empty so that nothing a key or a
//! record holds (`@everyone`, `<@123>`) pings anyone.

use serde_json::{Value, json};

use super::slack::SHOWN;
use super::webhook::{clip, deliver};
use super::{List, Notice, SendError};

const CONTENT_MAX: usize = 2000;
const TITLE_MAX: usize = 256;
const DESCRIPTION_MAX: usize = 4096;
const FIELDS_MAX: usize = 25;
const FIELD_NAME_MAX: usize = 256;
const FIELD_VALUE_MAX: usize = 1024;
const FOOTER_MAX: usize = 2048;
const EMBED_TOTAL_MAX: usize = 6000;
/// The description's share of the 6000, so that the fields keep room.
const DESCRIPTION_BUDGET: usize = 1500;
const FOOTER_BUDGET: usize = 400;
const ITEM_TEXT_MAX: usize = 200;

const RED: u32 = 0x00E0_1E5A;
const AMBER: u32 = 0x00EC_B22E;
const GREEN: u32 = 0x002E_B67D;

/// Discord's markdown characters, backslash-escaped so keys like `a_b_c*.jpg` read as written.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<' | '>' | '@'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A masked link's target: http(s) only, with what would close `(<…>)` percent-encoded.
fn link_target(url: &str) -> Option<String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return None;
    }
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            ' ' => out.push_str("%20"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

fn list_field(l: &List) -> (String, String) {
    let shown = l.items.len().min(SHOWN);
    let name = if l.total == 0 && l.items.is_empty() {
        format!("{}: none", l.title)
    } else {
        format!("{} — first {shown} of {}", l.title, l.total)
    };
    let mut value = String::new();
    for item in l.items.iter().take(SHOWN) {
        let label = escape(&clip(&item.text, ITEM_TEXT_MAX));
        let line = match item.link.as_deref().and_then(link_target) {
            // Angle brackets keep Discord from unfurling a preview of every link.
            Some(url) if url.len() + label.len() + 8 <= FIELD_VALUE_MAX / SHOWN => {
                format!("• [{label}](<{url}>)\n")
            }
            _ => format!("• {label}\n"),
        };
        if value.chars().count() + line.chars().count() > FIELD_VALUE_MAX - 2 {
            value.push('…');
            break;
        }
        value.push_str(&line);
    }
    let value = value.trim_end().to_string();
    if value.is_empty() {
        return (name, "—".into());
    }
    (name, value)
}

/// The alert first, then the headline, then what made the run incomplete.
fn description(n: &Notice) -> String {
    let mut lines = Vec::new();
    if let Some(a) = &n.alert {
        lines.push(format!(
            ":rotating_light: **Spike alert** (compared with scan #{})",
            a.baseline_scan
        ));
        lines.extend(a.lines.iter().map(|l| format!("• {}", escape(l))));
        lines.push(String::new());
    }
    lines.push(escape(&n.headline));
    if !n.complete {
        lines.push(String::new());
        lines.push(
            ":warning: **Incomplete run**: part of the storage or the database was not read, so these figures are not the whole picture.".into(),
        );
        lines.extend(n.warnings.iter().map(|w| format!("• {}", escape(w))));
    }
    clip(&lines.join("\n"), DESCRIPTION_BUDGET.min(DESCRIPTION_MAX))
}

/// `(name, value, inline)` of every field before the 6000-character budget is applied. Lists,
/// actions and API usage are worth more than the twentieth figure: figures get the slots the
/// others leave, the ones past them summed up in a last field.
fn fields(n: &Notice) -> Vec<(String, String, bool)> {
    let mut tail: Vec<(String, String, bool)> = n
        .lists
        .iter()
        .map(|l| {
            let (name, value) = list_field(l);
            (name, value, false)
        })
        .collect();
    if !n.actions.is_empty() {
        // The actions are the product's own wording, whose backticks mark commands to type.
        let v: Vec<String> = n.actions.iter().map(|a| format!("• {a}")).collect();
        tail.push(("Recommended actions".into(), v.join("\n"), false));
    }
    if !n.api_usage.is_empty() {
        tail.push(("API usage".into(), n.api_usage.join("\n"), false));
    }
    tail.truncate(FIELDS_MAX);
    let figure_slots = FIELDS_MAX - tail.len();
    let mut fields: Vec<(String, String, bool)> = Vec::new();
    if n.figures.len() <= figure_slots {
        fields.extend(
            n.figures
                .iter()
                .map(|f| (f.label.clone(), escape(&f.value), true)),
        );
    } else if figure_slots > 0 {
        let (shown, rest) = n.figures.split_at(figure_slots - 1);
        fields.extend(
            shown
                .iter()
                .map(|f| (f.label.clone(), escape(&f.value), true)),
        );
        let more: Vec<String> = rest
            .iter()
            .map(|f| format!("{}: {}", clip(&f.label, 100), clip(&f.value, 100)))
            .collect();
        fields.push(("More figures".into(), escape(&more.join("\n")), false));
    }
    fields.extend(tail);
    fields
}

pub fn payload(n: &Notice) -> Value {
    let title = clip(&n.subject(), TITLE_MAX);
    let description = description(n);
    let footer = n
        .report_path
        .as_ref()
        .map(|p| clip(&format!("Report: {p}"), FOOTER_BUDGET.min(FOOTER_MAX)));

    let mut used = title.chars().count()
        + description.chars().count()
        + footer.as_ref().map_or(0, |f| f.chars().count());
    let mut out_fields = Vec::new();
    for (name, value, inline) in fields(n) {
        // Discord rejects an empty name or value.
        let name = if name.trim().is_empty() {
            "—".to_string()
        } else {
            clip(&name, FIELD_NAME_MAX)
        };
        let value = if value.trim().is_empty() {
            "—".to_string()
        } else {
            value
        };
        let room = EMBED_TOTAL_MAX.saturating_sub(used + name.chars().count());
        // A field needs a little room to say anything; past that the rest is left out.
        if room < 16 {
            break;
        }
        let value = clip(&value, FIELD_VALUE_MAX.min(room));
        used += name.chars().count() + value.chars().count();
        out_fields.push(json!({ "name": name, "value": value, "inline": inline }));
    }

    let color = if n.alert.is_some() {
        RED
    } else if n.complete {
        GREEN
    } else {
        AMBER
    };
    let mut embed = json!({
        "title": title,
        "description": description,
        "color": color,
        "fields": out_fields,
    });
    if let Some(f) = footer {
        embed["footer"] = json!({ "text": f });
    }
    let time = ["finished_at", "started_at"]
        .iter()
        .find_map(|k| n.scan_json.get(*k).and_then(Value::as_str))
        .and_then(crate::time::parse_rfc3339)
        .unwrap_or_else(chrono::Utc::now);
    embed["timestamp"] = json!(crate::time::rfc3339(time));

    let content = if n.alert.is_some() {
        clip(
            &format!(
                ":rotating_light: Spike alert: {} {}",
                n.app_name,
                n.kind.label()
            ),
            CONTENT_MAX,
        )
    } else {
        String::new()
    };
    json!({
        "content": content,
        "embeds": [embed],
        "allowed_mentions": { "parse": [] },
    })
}

pub async fn send(client: &reqwest::Client, url: &str, n: &Notice) -> Result<(), SendError> {
    // Discord answers 204 without a body; a 429 is a retry through `SendError::status`.
    deliver(client.post(url).json(&payload(n))).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::slack::tests::notice;

    fn embed_total(e: &Value) -> usize {
        let len = |v: &Value| v.as_str().map_or(0, |s| s.chars().count());
        len(&e["title"])
            + len(&e["description"])
            + len(&e["footer"]["text"])
            + len(&e["author"]["name"])
            + e["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| len(&f["name"]) + len(&f["value"]))
                .sum::<usize>()
    }

    fn assert_within_limits(p: &Value) {
        assert!(p["content"].as_str().unwrap().chars().count() <= CONTENT_MAX);
        assert_eq!(p["allowed_mentions"], json!({ "parse": [] }));
        let embeds = p["embeds"].as_array().unwrap();
        assert_eq!(embeds.len(), 1);
        let e = &embeds[0];
        assert!(e["title"].as_str().unwrap().chars().count() <= TITLE_MAX);
        assert!(e["description"].as_str().unwrap().chars().count() <= DESCRIPTION_MAX);
        let fields = e["fields"].as_array().unwrap();
        assert!(fields.len() <= FIELDS_MAX);
        for f in fields {
            let name = f["name"].as_str().unwrap();
            let value = f["value"].as_str().unwrap();
            assert!(!name.is_empty() && !value.is_empty());
            assert!(name.chars().count() <= FIELD_NAME_MAX);
            assert!(value.chars().count() <= FIELD_VALUE_MAX);
        }
        assert!(e["footer"]["text"].as_str().unwrap_or("").chars().count() <= FOOTER_MAX);
        assert!(
            embed_total(e) <= EMBED_TOTAL_MAX,
            "embed of {}",
            embed_total(e)
        );
    }

    #[test]
    fn embed_shows_figures_five_items_and_the_report() {
        let p = payload(&notice(7, false));
        assert_within_limits(&p);
        let e = &p["embeds"][0];
        assert_eq!(e["color"], GREEN);
        assert_eq!(p["content"], "");
        assert!(e["description"].as_str().unwrap().starts_with("7 orphans"));
        let all = p.to_string();
        assert!(all.contains("first 5 of 7"));
        assert!(all.contains("media/a4.jpg"));
        assert!(!all.contains("a5.jpg"));
        assert!(!all.contains("javascript:"));
        assert_eq!(
            e["footer"]["text"],
            "Report: reports/asset_detection_2026-12-04_100000.csv"
        );
        assert!(e["timestamp"].is_string());
    }

    #[test]
    fn long_keys_and_many_figures_stay_within_limits() {
        let p = payload(&notice(20, true));
        assert_within_limits(&p);
        let e = &p["embeds"][0];
        assert_eq!(e["color"], RED);
        assert!(
            e["description"]
                .as_str()
                .unwrap()
                .starts_with(":rotating_light: **Spike alert**")
        );
        let mut n = notice(20, true);
        n.alert = None;
        let p = payload(&n);
        assert_within_limits(&p);
        assert_eq!(p["embeds"][0]["color"], AMBER);
    }
}
