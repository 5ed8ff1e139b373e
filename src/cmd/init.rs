//! `assetgc init`: write a commented assetgc.toml that `check` accepts once two URLs are filled in.

use std::io::Write as _;

use crate::cli::InitArgs;
use crate::error::{Error, Exit, Result};

pub const TEMPLATE: &str = r#"# assetgc configuration. Every string may use ${VAR} or ${VAR:-default} from the environment.
# Relative paths are taken from this file's folder. Check it with: assetgc check

app_name = "My App"                      # shown in reports

# [state]
# url = "sqlite://assetgc.db"            # scan history, the deletion queue, the audit log (default);
#                                        # postgres://… (schema `assetgc`) lets several instances share it

# [reports]
# dir = "reports"                        # where scan reports are written (default)

# A storage location: a folder path ("./media", "/var/www/app/media") or a file:// URL,
# "s3://bucket/prefix", "gs://bucket/prefix", "az://container/prefix", or a Cloudinary account,
# "cloudinary://${CLOUDINARY_KEY}:${CLOUDINARY_SECRET}@my-cloud" (resource_types = ["image", "video"],
# api_budget = { calls_per_hour = 500, warn_at = 0.80, stop_at = 0.95 }).
[stores.media]
url = ""                                 # FILL IN: where the uploaded files are
ignore = []                              # globs never reported or deleted, e.g. ["static/**", "**/.keep"]
min_age = "24h"                          # younger files are never orphans (too_recent)
# public_url = "https://cdn.example.com/media"   # how files are addressed; needed for key_format = "url"
# quarantine = { prefix = ".assetgc-trash/", keep = "7d" }   # deletions move here first (default); false turns it off

# The application's database: postgres://user:${DB_PASSWORD}@host/db, mysql://…, or sqlite://app.db
[databases.app]
url = ""                                 # FILL IN, e.g. "${DATABASE_URL}"

# One [[references]] per column that points into a store. The query must return a `key` column;
# id, title, owner, status (ACTIVE/DELETED), created_at and media_type are optional and fill the
# report; every column can be used in `link`. Soft-deleted rows still protect their files.
# Without any reference, every file of a store is reported as an orphan.
#
# [[references]]
# name = "profile pictures"
# database = "app"
# store = "media"
# query = """
#   SELECT id, username AS title, avatar AS key, created_at,
#          CASE WHEN deleted_at IS NULL THEN 'ACTIVE' ELSE 'DELETED' END AS status
#   FROM users
# """
# key_format = "path"                    # path | url | { regex = '<img src="(?P<key>[^"]+)"' }
#                                        # (Cloudinary stores: "cloudinary", their default)
# key_prefix = ""                        # removed from each key; values without it are not this store's
# link = "https://example.com/admin/users/{id}/"

## Deleting (`assetgc purge`, `assetgc queue run`): the queue's worker and the mass-deletion guard.
# [queue]
# batch_size = 100                       # entries claimed at once (1 to 1000)
# max_attempts = 3                       # then `failed`, for `assetgc queue retry` or `queue drop`
# backoff = "1m"                         # doubled per attempt, up to backoff_max
# backoff_max = "1h"
#
# [safety]
# max_orphan_share = 0.5                 # purge refuses when more of a store's objects are orphans
# max_orphan_jump = 10                   # ... or when its orphans grew this many times since the last comparable scan

## Notifications: runs given --notify send their summary here.
# [notify]
# on = "findings"                        # findings (default) | always | never
# email = { smtp_url = "smtps://user:${SMTP_PASSWORD}@smtp.example.com", from = "assetgc@example.com", to = ["admin@example.com"], attach_max = "5MB" }
# slack = { webhook_url = "${SLACK_WEBHOOK}" }
# discord = { webhook_url = "${DISCORD_WEBHOOK}" }
# webhook = { url = "https://hooks.example.com/assetgc", secret = "${WEBHOOK_SECRET}" }   # HMAC-SHA256 signed
# spike = { orphans_increase = 50, missing_increase = 10, orphans_ratio = 2.0 }      # any one met: alert
"#;

pub fn run(args: &InitArgs) -> Result<Exit> {
    let path = &args.output;
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    if args.force {
        open.create(true).truncate(true);
    } else {
        // create_new: never over an existing file, even one that appears between check and write.
        open.create_new(true);
    }
    let mut file = match open.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::Usage(format!(
                "{} already exists; pass --force to overwrite it, or --output PATH to write elsewhere",
                path.display()
            )));
        }
        Err(e) => return Err(Error::io(format!("cannot write {}", path.display()), e)),
    };
    file.write_all(TEMPLATE.as_bytes())
        .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    outln!(
        "wrote {}: fill in [stores.media] url and [databases.app] url, add a [[references]], then run `assetgc check`",
        path.display()
    );
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn template_parses_once_urls_are_filled_in() {
        let text = super::TEMPLATE
            .replacen("url = \"\"", "url = \"./media\"", 1)
            .replacen("url = \"\"", "url = \"sqlite://app.db\"", 1);
        let cfg = crate::config::parse(&text, "t.toml", std::path::Path::new("/x"), &|_| None)
            .expect("template parses");
        assert_eq!(cfg.stores.len(), 1);
        assert_eq!(cfg.databases.len(), 1);
        assert!(cfg.references.is_empty());
    }

    #[test]
    fn commented_reference_parses_when_uncommented() {
        let mut text = super::TEMPLATE
            .replacen("url = \"\"", "url = \"./media\"", 1)
            .replacen("url = \"\"", "url = \"sqlite://app.db\"", 1);
        let at = text.find("# [[references]]").unwrap();
        let tail: String = text[at..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        text.truncate(at);
        text.push_str(&tail);
        let env = |name: &str| {
            Some(match name {
                "SMTP_PASSWORD" | "WEBHOOK_SECRET" => "secret".to_string(),
                "SLACK_WEBHOOK" => "https://hooks.slack.com/services/T0/B0/x".to_string(),
                "DISCORD_WEBHOOK" => "https://discord.com/api/webhooks/1/x".to_string(),
                _ => return None,
            })
        };
        let cfg = crate::config::parse(&text, "t.toml", std::path::Path::new("/x"), &env)
            .expect("uncommented template parses");
        assert_eq!(cfg.references.len(), 1);
        assert_eq!(
            cfg.notify.channels(),
            ["email", "slack", "discord", "webhook"]
        );
        assert!(cfg.notify.spike.is_some());
    }
}
