//! `[notify]` (SPEC §2, §5): when a run that was given `--notify` sends, and where to. Secrets
//! (the SMTP password, webhook URLs, the HMAC secret) are kept in [`Secret`]s, so no `Debug`
//! print or error shows them.

use serde::Deserialize;
use toml::Spanned;

use super::{Cx, Secret, Text};
use crate::error::Result;

/// A message's attachment limit when `attach_max` is not given: 5 MB, the product's MB
/// (1,048,576 bytes, SPEC §5).
pub const DEFAULT_ATTACH_MAX: u64 = 5 * 1_048_576;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    on: Option<Text>,
    email: Option<Spanned<RawEmail>>,
    slack: Option<Spanned<RawHook>>,
    discord: Option<Spanned<RawHook>>,
    webhook: Option<Spanned<RawWebhook>>,
    spike: Option<Spanned<RawSpike>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmail {
    smtp_url: Option<Text>,
    from: Option<Text>,
    #[serde(default)]
    to: Vec<Text>,
    attach_max: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHook {
    webhook_url: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    url: Option<Text>,
    secret: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSpike {
    orphans_increase: Option<Spanned<i64>>,
    missing_increase: Option<Spanned<i64>>,
    orphans_ratio: Option<Spanned<f64>>,
}

/// `on`: which runs given `--notify` send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NotifyOn {
    /// A scan with orphans or missing rows, a deletion run that deleted, failed or dropped
    /// anything.
    #[default]
    Findings,
    Always,
    Never,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtp://`: STARTTLS, required (the connection fails rather than send in clear).
    StartTls,
    /// `smtps://`: TLS from the first byte.
    Wrapper,
    /// `smtp://…?tls=none`: no TLS at all, for a relay on the same host.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// The URL as written, password included: shown only through `Secret`'s redacting `Debug`.
    pub smtp_url: Secret,
    pub tls: SmtpTls,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub to: Vec<String>,
    /// The CSV report is attached when it is at most this many bytes.
    pub attach_max: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub url: HookUrl,
    pub secret: Secret,
}

/// A webhook URL. Slack's and Discord's carry their credential in the path (and others may in
/// the query), so its `Debug` shows the scheme and host alone.
#[derive(Clone, PartialEq, Eq)]
pub struct HookUrl(String);

impl HookUrl {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for HookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match url::Url::parse(&self.0) {
            Ok(u) => write!(f, "{}://{}/***", u.scheme(), u.host_str().unwrap_or("?")),
            Err(_) => f.write_str("***"),
        }
    }
}

/// Any one threshold met raises a spike alert (compared with the comparable scan).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SpikeConfig {
    /// Orphans grew by at least this many.
    pub orphans_increase: Option<u64>,
    /// Missing rows grew by at least this many.
    pub missing_increase: Option<u64>,
    /// Orphans are at least this many times what they were.
    pub orphans_ratio: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NotifyConfig {
    pub on: NotifyOn,
    pub email: Option<EmailConfig>,
    /// Slack incoming webhook URL.
    pub slack: Option<HookUrl>,
    /// Discord webhook URL.
    pub discord: Option<HookUrl>,
    pub webhook: Option<WebhookConfig>,
    /// `None`: no spike alerts.
    pub spike: Option<SpikeConfig>,
}

impl NotifyConfig {
    /// The configured channels' names, in sending order.
    pub fn channels(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.email.is_some() {
            out.push("email");
        }
        if self.slack.is_some() {
            out.push("slack");
        }
        if self.discord.is_some() {
            out.push("discord");
        }
        if self.webhook.is_some() {
            out.push("webhook");
        }
        out
    }
}

/// `smtp_url`'s parts: how it is secured, host, port, user, password.
type SmtpParts = (SmtpTls, String, u16, Option<String>, Option<String>);

/// `smtp_url`'s parts. The password is percent-decoded (`p%40ss` is `p@ss`).
fn parse_smtp_url(s: &str) -> std::result::Result<SmtpParts, String> {
    let url = url::Url::parse(s).map_err(|e| {
        format!(
            "smtp_url is not a URL ({e}): write smtps://user:password@smtp.example.com or smtp://user:password@smtp.example.com:587"
        )
    })?;
    let mut tls = match url.scheme() {
        "smtp" => SmtpTls::StartTls,
        "smtps" => SmtpTls::Wrapper,
        other => {
            return Err(format!(
                "smtp_url scheme `{other}` is not smtp:// (STARTTLS) or smtps:// (TLS)"
            ));
        }
    };
    for (k, v) in url.query_pairs() {
        match (k.as_ref(), v.as_ref(), tls) {
            ("tls", "required" | "starttls", SmtpTls::StartTls) => {}
            ("tls", "none", SmtpTls::StartTls) => tls = SmtpTls::None,
            ("tls", v, _) => {
                return Err(format!(
                    "smtp_url ?tls={v} is not understood: smtp:// takes ?tls=none (no TLS, for a relay on this host); smtps:// takes none"
                ));
            }
            (k, _, _) => {
                return Err(format!(
                    "smtp_url has an unknown parameter `{k}`; the only one is ?tls=none"
                ));
            }
        }
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("smtp_url has no host: write smtps://user:password@smtp.example.com")?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port().unwrap_or(match tls {
        SmtpTls::Wrapper => 465,
        SmtpTls::StartTls => 587,
        SmtpTls::None => 25,
    });
    let decode = |v: &str| {
        percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map(std::borrow::Cow::into_owned)
            .map_err(|_| {
                "smtp_url's user or password is not UTF-8 once percent-decoded".to_string()
            })
    };
    let user = Some(url.username())
        .filter(|u| !u.is_empty())
        .map(decode)
        .transpose()?;
    let password = url.password().map(decode).transpose()?;
    if password.is_some() && user.is_none() {
        return Err("smtp_url has a password but no user name".into());
    }
    Ok((tls, host, port, user, password))
}

/// An address as lettre reads it (`admin@example.com` or `Ops <ops@example.com>`).
fn check_mailbox(s: &str) -> std::result::Result<(), String> {
    s.parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| format!("`{s}` is not an email address ({e})"))
}

/// A webhook URL: http or https with a host. Only the scheme and host are ever shown.
fn check_hook_url(s: &str, what: &str) -> std::result::Result<(), String> {
    let url = url::Url::parse(s).map_err(|_| format!("{what} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{what} must be an http:// or https:// URL"));
    }
    Ok(())
}

impl Cx<'_> {
    pub(super) fn notify(&self, raw: Option<&Spanned<RawNotify>>) -> Result<NotifyConfig> {
        let mut n = NotifyConfig::default();
        let Some(raw) = raw.map(Spanned::get_ref) else {
            return Ok(n);
        };
        if let Some(t) = &raw.on {
            let v = self.expand(t)?;
            n.on = match v.trim() {
                "findings" => NotifyOn::Findings,
                "always" => NotifyOn::Always,
                "never" => NotifyOn::Never,
                other => {
                    return Err(self.err_at(
                        t,
                        format!("[notify] on must be findings, always or never, not `{other}`"),
                    ));
                }
            };
        }
        if let Some(e) = &raw.email {
            n.email = Some(self.email(e)?);
        }
        for (raw_hook, slot, what) in [
            (&raw.slack, &mut n.slack, "[notify] slack"),
            (&raw.discord, &mut n.discord, "[notify] discord"),
        ] {
            if let Some(h) = raw_hook {
                let t = h.get_ref().webhook_url.as_ref().ok_or_else(|| {
                    self.err_at(h, format!("{what} needs webhook_url = \"https://…\""))
                })?;
                let url = self.expand(t)?;
                check_hook_url(url.trim(), &format!("{what} webhook_url"))
                    .map_err(|m| self.err_at(t, m))?;
                *slot = Some(HookUrl(url.trim().to_string()));
            }
        }
        if let Some(w) = &raw.webhook {
            let r = w.get_ref();
            let t = r.url.as_ref().ok_or_else(|| {
                self.err_at(w, "[notify] webhook needs url = \"https://…\" and secret")
            })?;
            let url = self.expand(t)?;
            check_hook_url(url.trim(), "[notify] webhook url").map_err(|m| self.err_at(t, m))?;
            let s = r.secret.as_ref().ok_or_else(|| {
                self.err_at(
                    w,
                    "[notify] webhook needs secret = \"${WEBHOOK_SECRET}\": its bodies are signed with it",
                )
            })?;
            let secret = self.expand(s)?;
            if secret.is_empty() {
                return Err(self.err_at(s, "[notify] webhook secret is empty"));
            }
            n.webhook = Some(WebhookConfig {
                url: HookUrl(url.trim().to_string()),
                secret: Secret(secret),
            });
        }
        if let Some(s) = &raw.spike {
            n.spike = Some(self.spike(s)?);
        }
        Ok(n)
    }

    fn email(&self, e: &Spanned<RawEmail>) -> Result<EmailConfig> {
        let r = e.get_ref();
        let t = r.smtp_url.as_ref().ok_or_else(|| {
            self.err_at(
                e,
                "[notify] email needs smtp_url = \"smtps://user:password@host\"",
            )
        })?;
        let url = self.expand(t)?;
        let (tls, host, port, user, password) = parse_smtp_url(url.trim())
            .map_err(|m| self.err_at(t, format!("[notify] email {m}")))?;
        let from_t = r
            .from
            .as_ref()
            .ok_or_else(|| self.err_at(e, "[notify] email needs from = \"assetgc@example.com\""))?;
        let from = self.expand(from_t)?.trim().to_string();
        check_mailbox(&from)
            .map_err(|m| self.err_at(from_t, format!("[notify] email from: {m}")))?;
        if r.to.is_empty() {
            return Err(self.err_at(e, "[notify] email needs to = [\"admin@example.com\"]"));
        }
        let mut to = Vec::new();
        for t in &r.to {
            let a = self.expand(t)?.trim().to_string();
            check_mailbox(&a).map_err(|m| self.err_at(t, format!("[notify] email to: {m}")))?;
            to.push(a);
        }
        let attach_max = match &r.attach_max {
            None => DEFAULT_ATTACH_MAX,
            Some(t) => {
                let v = self.expand(t)?;
                parse_size(&v)
                    .map_err(|m| self.err_at(t, format!("[notify] email attach_max: {m}")))?
            }
        };
        Ok(EmailConfig {
            smtp_url: Secret(url.trim().to_string()),
            tls,
            host,
            port,
            user,
            password: password.map(Secret),
            from,
            to,
            attach_max,
        })
    }

    fn spike(&self, s: &Spanned<RawSpike>) -> Result<SpikeConfig> {
        let r = s.get_ref();
        let count = |v: &Option<Spanned<i64>>, what: &str| -> Result<Option<u64>> {
            v.as_ref()
                .map(|v| {
                    u64::try_from(*v.get_ref())
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| {
                            self.err_at(v, format!("[notify] spike {what} must be 1 or more"))
                        })
                })
                .transpose()
        };
        let orphans_ratio = r
            .orphans_ratio
            .as_ref()
            .map(|v| {
                let x = *v.get_ref();
                if x.is_finite() && x > 1.0 {
                    Ok(x)
                } else {
                    Err(self.err_at(v, "[notify] spike orphans_ratio must be a number above 1 (2.0: orphans doubled)"))
                }
            })
            .transpose()?;
        let out = SpikeConfig {
            orphans_increase: count(&r.orphans_increase, "orphans_increase")?,
            missing_increase: count(&r.missing_increase, "missing_increase")?,
            orphans_ratio,
        };
        if out == SpikeConfig::default() {
            return Err(self.err_at(
                s,
                "[notify] spike needs at least one of orphans_increase, missing_increase, orphans_ratio",
            ));
        }
        Ok(out)
    }
}

/// `5MB`, `512KB`, `1GB`, `2MiB` or a plain number of bytes. Every "MB" of the product is
/// 1,048,576 bytes (SPEC §5), so `KB`/`KiB`, `MB`/`MiB` and `GB`/`GiB` are powers of 1024.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = (&t[..split], t[split..].trim());
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: write 5MB, 512KB or a number of bytes"))?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" | "kib" => 1024.0,
        "mb" | "m" | "mib" => 1_048_576.0,
        "gb" | "g" | "gib" => 1_073_741_824.0,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}`; use B, KB, MB, GB, KiB, MiB or GiB"
            ));
        }
    };
    let bytes = n * mult;
    if !bytes.is_finite() || !(0.0..=1e15).contains(&bytes) {
        return Err(format!("`{s}` is not a size in range"));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("5MB"), Ok(5_242_880));
        assert_eq!(parse_size("512 KB"), Ok(524_288));
        assert_eq!(parse_size("2MiB"), Ok(2_097_152));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5XB").is_err());
    }

    #[test]
    fn smtp_urls() {
        let (tls, host, port, user, pass) =
            parse_smtp_url("smtps://u%40x:p%2Fw@mail.example.com").unwrap();
        assert_eq!(
            (tls, host.as_str(), port, user.as_deref(), pass.as_deref()),
            (
                SmtpTls::Wrapper,
                "mail.example.com",
                465,
                Some("u@x"),
                Some("p/w")
            )
        );
        let (tls, _, port, user, _) = parse_smtp_url("smtp://localhost:2525").unwrap();
        assert_eq!((tls, port, user), (SmtpTls::StartTls, 2525, None));
        let (tls, _, port, _, _) = parse_smtp_url("smtp://relay?tls=none").unwrap();
        assert_eq!((tls, port), (SmtpTls::None, 25));
        assert!(parse_smtp_url("http://x").is_err());
        assert!(parse_smtp_url("smtps://x?tls=none").is_err());
        assert!(parse_smtp_url("smtp://:pw@x").is_err());
    }
}

#[cfg(test)]
mod debug_tests {

    #[test]
    fn debug_never_shows_a_secret() {
        let env = |_: &str| None;
        let text = "[stores.m]\nurl = \"/tmp\"\n[notify]\nslack = { webhook_url = \"https://hooks.slack.com/services/T0/B0/SLACKTOKEN\" }\ndiscord = { webhook_url = \"https://discord.com/api/webhooks/1/DISCORDTOKEN\" }\nwebhook = { url = \"https://h.example.com/hook?token=QUERYTOKEN\", secret = \"HMACSECRET\" }\nemail = { smtp_url = \"smtps://u:SMTPPASSWORD@mail.example.com\", from = \"a@example.com\", to = [\"b@example.com\"] }\n";
        let cfg = crate::config::parse(text, "t.toml", std::path::Path::new("/x"), &env).unwrap();
        let shown = format!("{:?} {:?}", cfg.notify, cfg);
        for secret in [
            "SLACKTOKEN",
            "DISCORDTOKEN",
            "QUERYTOKEN",
            "HMACSECRET",
            "SMTPPASSWORD",
        ] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
        assert!(shown.contains("https://hooks.slack.com/***"), "{shown}");
    }
}
