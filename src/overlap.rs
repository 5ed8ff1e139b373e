//! Overlapping stores are one place (SPEC §6 invariant 1). Every part that lists, purges,
//! re-checks or deletes asks this module which other stores share a store's objects, how a key
//! reads in each of them, and which rules apply when deleting through the store: the union of
//! their `ignore` globs, their largest `min_age`, quarantine when any has it on, and every one of
//! their quarantine prefixes left out and refused.

use std::time::Duration;

use crate::config::{Config, Quarantine, StoreConfig};

/// How a key of the store asked about reads in another store that overlaps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    /// The same place (identical roots, one Cloudinary cloud and delivery type, or declared
    /// with `overlaps`): keys read the same.
    Same,
    /// The other store lies inside this one at this prefix: only keys under it are its.
    Inside(String),
    /// This store lies inside the other one at this prefix: its keys read with it in front.
    Outside(String),
}

impl View {
    /// A key of the store asked about, as the other store spells it (`None`: not its).
    pub fn to_other(&self, key: &str) -> Option<String> {
        match self {
            View::Same => Some(key.to_string()),
            View::Inside(rel) => key.strip_prefix(rel.as_str()).map(str::to_string),
            View::Outside(rel) => Some(format!("{rel}{key}")),
        }
    }

    /// A key of the other store, as the store asked about spells it (`None`: outside it).
    pub fn from_other(&self, key: &str) -> Option<String> {
        match self {
            View::Same => Some(key.to_string()),
            View::Inside(rel) => Some(format!("{rel}{key}")),
            View::Outside(rel) => key.strip_prefix(rel.as_str()).map(str::to_string),
        }
    }
}

/// Another store that shares objects with the one asked about.
#[derive(Debug, Clone)]
pub struct Overlap {
    /// Its index in `cfg.stores`.
    pub store: usize,
    pub view: View,
}

/// How store `b` relates to store `a`, when they overlap: by location (normalised, see
/// `StoreLocation::contains`), else by an `overlaps` declaration on either side, which reads
/// keys the same (a folder that is a mounted bucket).
fn relation(a: &StoreConfig, b: &StoreConfig) -> Option<View> {
    if let Some(rel) = a.location.contains(&b.location) {
        return Some(if rel.is_empty() {
            View::Same
        } else {
            View::Inside(rel)
        });
    }
    if let Some(rel) = b.location.contains(&a.location) {
        return Some(View::Outside(rel));
    }
    (a.overlaps.contains(&b.name) || b.overlaps.contains(&a.name)).then_some(View::Same)
}

/// Every other store that overlaps store `s`, in config order.
pub fn overlapping(cfg: &Config, s: usize) -> Vec<Overlap> {
    let me = &cfg.stores[s];
    cfg.stores
        .iter()
        .enumerate()
        .filter(|&(t, _)| t != s)
        .filter_map(|(t, other)| relation(me, other).map(|view| Overlap { store: t, view }))
        .collect()
}

/// Store `s` itself (as [`View::Same`]) and every store that overlaps it.
pub fn with_self(cfg: &Config, s: usize) -> Vec<Overlap> {
    std::iter::once(Overlap {
        store: s,
        view: View::Same,
    })
    .chain(overlapping(cfg, s))
    .collect()
}

/// What deleting through one store must respect: the rules of every store that overlaps it.
pub struct Rules {
    /// The largest `min_age` among them.
    pub min_age: Duration,
    /// The store's own quarantine when on, else the first overlapping store's that is on.
    pub quarantine: Option<Quarantine>,
    ignores: Vec<(View, String, crate::config::Ignore)>,
}

impl Rules {
    /// The name of a store whose `ignore` glob matches `key` (a key of the store asked about),
    /// read in that store's own key space.
    pub fn ignored(&self, key: &str) -> Option<&str> {
        self.ignores.iter().find_map(|(view, name, ignore)| {
            view.to_other(key)
                .filter(|k| ignore.matches(k))
                .map(|_| name.as_str())
        })
    }
}

/// The rules for deleting through store `s` (SPEC §6 invariant 1).
pub fn rules(cfg: &Config, s: usize) -> Rules {
    let all = with_self(cfg, s);
    let stores = || all.iter().map(|o| &cfg.stores[o.store]);
    Rules {
        min_age: stores().map(|c| c.min_age).max().unwrap_or_default(),
        quarantine: stores().find_map(|c| c.quarantine.clone()),
        ignores: all
            .iter()
            .filter(|o| !cfg.stores[o.store].ignore.is_empty())
            .map(|o| {
                let c = &cfg.stores[o.store];
                (o.view.clone(), c.name.clone(), c.ignore.clone())
            })
            .collect(),
    }
}

/// Store `s`'s settings with the overlapping stores' `min_age` and quarantine applied, for the
/// code that deletes through it. Its own `ignore` stays: ask [`Rules::ignored`] for the union.
pub fn effective_store(cfg: &Config, s: usize) -> StoreConfig {
    let r = rules(cfg, s);
    let mut c = cfg.stores[s].clone();
    c.min_age = r.min_age;
    c.quarantine = r.quarantine;
    c
}

/// The index of the store named `name`.
pub fn index(cfg: &Config, name: &str) -> Option<usize> {
    cfg.stores.iter().position(|s| s.name == name)
}

/// The quarantine prefixes in store `s`'s key space: its own and that of every overlapping
/// store, identical roots included (SPEC §6 invariants 1 and 4). Left out of every listing of
/// `s` and refused as deletion targets.
pub fn trash_prefixes(cfg: &Config, s: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in with_self(cfg, s) {
        let Some(trash) = crate::store::trash_prefix(&effective_store(cfg, o.store)) else {
            continue;
        };
        let here = match &o.view {
            // `s` lies inside the other store's trash: everything of `s` is trash.
            View::Outside(rel) if rel.starts_with(trash.as_str()) => Some(String::new()),
            v => v.from_other(&trash),
        };
        if let Some(p) = here
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    out
}

/// Why `key` of store `store` may not be deleted as an object: it lies in one of `prefixes`, the
/// store's [`trash_prefixes`] (computed once for many keys: they ask the filesystem).
pub fn trash_reason(store: &str, prefixes: &[String], key: &str) -> Option<String> {
    prefixes
        .iter()
        .find(|p| key.starts_with(p.as_str()))
        .map(|p| {
            format!(
                "`{key}` lies in the quarantine `{p}` of store {store} or a store overlapping it; it is removed only by its quarantine record"
            )
        })
}

/// A store's fingerprint (SPEC §6): kind, normalised location and quarantine prefix. A scan or a
/// queue entry recorded under another fingerprint is not applied to the store.
pub fn fingerprint(store: &StoreConfig) -> String {
    format!(
        "{}|{}",
        store.location.normalised(),
        crate::store::trash_prefix(store).unwrap_or_else(|| "-".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreLocation;

    #[test]
    fn views_translate_both_ways() {
        let inside = View::Inside("clips/".into());
        assert_eq!(inside.to_other("clips/a.mp4").as_deref(), Some("a.mp4"));
        assert_eq!(inside.to_other("a.mp4"), None);
        assert_eq!(inside.from_other("a.mp4").as_deref(), Some("clips/a.mp4"));
        let outside = View::Outside("clips/".into());
        assert_eq!(outside.to_other("a.mp4").as_deref(), Some("clips/a.mp4"));
        assert_eq!(outside.from_other("x/a.mp4"), None);
    }

    fn config(text: &str) -> Config {
        crate::config::parse(text, "assetgc.toml", std::path::Path::new("/base"), &|_| {
            None
        })
        .expect("config")
    }

    fn two(a: &str, b: &str) -> Config {
        config(&format!("[stores.a]\n{a}\n[stores.b]\n{b}\n"))
    }

    fn view(cfg: &Config) -> Option<View> {
        overlapping(cfg, 0).into_iter().next().map(|o| o.view)
    }

    #[test]
    fn s3_endpoints_written_differently_are_one_place() {
        let same = [
            // trailing `/`
            (
                "endpoint = \"https://s3.eu-west-3.amazonaws.com\"",
                "endpoint = \"https://s3.eu-west-3.amazonaws.com/\"",
            ),
            // absent vs AWS's default, global and regional
            ("", "endpoint = \"https://s3.amazonaws.com\""),
            ("", "endpoint = \"https://s3.eu-west-3.amazonaws.com\""),
            // host case and the default port
            (
                "endpoint = \"https://MinIO.Example.com:443\"",
                "endpoint = \"https://minio.example.com\"",
            ),
            // two names that may be one server
            (
                "endpoint = \"http://minio:9000\"",
                "endpoint = \"http://127.0.0.1:9000\"",
            ),
        ];
        for (ea, eb) in same {
            let cfg = two(
                &format!("url = \"s3://bkt\"\n{ea}"),
                &format!("url = \"s3://bkt/clips/\"\n{eb}"),
            );
            assert_eq!(
                view(&cfg),
                Some(View::Inside("clips/".into())),
                "{ea} / {eb}"
            );
            assert_eq!(
                overlapping(&cfg, 1)[0].view,
                View::Outside("clips/".into()),
                "symmetric"
            );
        }
        let apart = two(
            "url = \"s3://bkt\"",
            "url = \"s3://bkt\"\nendpoint = \"https://nyc3.digitaloceanspaces.com\"",
        );
        assert_eq!(view(&apart), None, "AWS and Spaces are provably different");
        let other_bucket = two("url = \"s3://bkt\"", "url = \"s3://bkt2\"");
        assert_eq!(view(&other_bucket), None);
    }

    #[test]
    fn gcs_and_azure_endpoints_compare_normalised() {
        let gcs = two(
            "url = \"gs://bkt\"",
            "url = \"gs://bkt/clips\"\nendpoint = \"HTTPS://storage.googleapis.com:443/\"",
        );
        assert_eq!(view(&gcs), Some(View::Inside("clips/".into())));
        let emulator = two(
            "url = \"gs://bkt\"\nendpoint = \"http://127.0.0.1:9023\"",
            "url = \"gs://bkt\"\nendpoint = \"https://storage.googleapis.com\"",
        );
        assert_eq!(
            view(&emulator),
            Some(View::Same),
            "an address may be anything"
        );
        let other_bucket = two("url = \"gs://bkt\"", "url = \"gs://bkt2\"");
        assert_eq!(view(&other_bucket), None);
        let az = crate::config::parse(
            "[stores.a]\nurl = \"az://box\"\nendpoint = \"http://127.0.0.1:10000/devstoreaccount1/\"\n[stores.b]\nurl = \"az://box/a\"\nendpoint = \"HTTP://127.0.0.1:10000/devstoreaccount1\"\n",
            "assetgc.toml",
            std::path::Path::new("/base"),
            &|v| (v == "AZURE_STORAGE_USE_EMULATOR").then(|| "true".to_string()),
        )
        .expect("config");
        assert_eq!(view(&az), Some(View::Inside("a/".into())));
    }

    #[test]
    fn folder_roots_compare_canonicalised() {
        let dir = tempfile::tempdir().expect("tmp");
        let root = dir.path().join("media");
        std::fs::create_dir_all(root.join("clips")).expect("mkdir");
        let r = root.display();
        let cfg = two(
            &format!("url = \"{r}/\""),
            &format!("url = \"{r}/clips/../clips\""),
        );
        assert_eq!(view(&cfg), Some(View::Inside("clips/".into())));
        let same = two(&format!("url = \"{r}\""), &format!("url = \"{r}/\""));
        assert_eq!(view(&same), Some(View::Same));
        let not_yet = two(
            &format!("url = \"{r}/new\""),
            &format!("url = \"{r}/new/deeper\""),
        );
        assert_eq!(view(&not_yet), Some(View::Inside("deeper/".into())));
    }

    #[test]
    fn cloudinary_stores_on_one_cloud_and_delivery_type_are_one_place() {
        let cfg = two(
            "url = \"cloudinary://k:s@Demo\"\nresource_types = [\"image\"]",
            "url = \"cloudinary://k:s@demo\"\nresource_types = [\"video\"]",
        );
        assert_eq!(view(&cfg), Some(View::Same));
        let private = two(
            "url = \"cloudinary://k:s@demo\"",
            "url = \"cloudinary://k:s@demo\"\ndelivery_type = \"private\"",
        );
        assert_eq!(view(&private), None);
    }

    #[test]
    fn declared_overlaps_are_symmetric_and_checked() {
        let cfg = two(
            "url = \"/srv/mnt/bucket\"\noverlaps = [\"b\"]",
            "url = \"s3://bkt\"",
        );
        assert_eq!(view(&cfg), Some(View::Same));
        assert_eq!(overlapping(&cfg, 1)[0].store, 0, "symmetric");
        let err = crate::config::parse(
            "[stores.a]\nurl = \"/srv/a\"\noverlaps = [\"nope\"]\n",
            "assetgc.toml",
            std::path::Path::new("/base"),
            &|_| None,
        )
        .expect_err("unknown store");
        let msg = err.to_string();
        assert!(msg.contains("overlaps") && msg.contains("nope"), "{msg}");
        assert!(msg.contains("line 3"), "names the line: {msg}");
    }

    #[test]
    fn rules_take_the_union_of_overlapping_stores() {
        let cfg = two(
            "url = \"s3://bkt\"\nmin_age = \"1h\"\nquarantine = false",
            "url = \"s3://bkt/clips/\"\nmin_age = \"3d\"\nignore = [\"keep/**\"]",
        );
        let r = rules(&cfg, 0);
        assert_eq!(r.min_age, Duration::from_hours(72));
        assert!(
            r.quarantine.is_some(),
            "on when any overlapping store has it on"
        );
        assert_eq!(r.ignored("clips/keep/a.mp4"), Some("b"), "translated glob");
        assert_eq!(r.ignored("keep/a.mp4"), None);
        assert_eq!(
            trash_prefixes(&cfg, 0),
            vec![
                ".assetgc-trash/".to_string(),
                "clips/.assetgc-trash/".into()
            ]
        );
        let same = two(
            "url = \"s3://bkt\"",
            "url = \"s3://bkt/\"\nquarantine = { prefix = \"bin/\" }",
        );
        assert_eq!(
            trash_prefixes(&same, 0),
            vec![".assetgc-trash/".to_string(), "bin/".into()],
            "identical roots exclude each other's trash"
        );
        let in_trash = |s: usize, key: &str| trash_reason("s", &trash_prefixes(&same, s), key);
        assert!(in_trash(0, "bin/20260101T000000Z/a.jpg").is_some());
    }

    #[test]
    fn fingerprint_changes_with_the_location() {
        let a = config("[stores.media]\nurl = \"s3://bkt/staging/\"\n");
        let b = config("[stores.media]\nurl = \"s3://bkt/prod/\"\n");
        let a2 = config(
            "[stores.media]\nurl = \"s3://bkt/staging\"\nendpoint = \"https://S3.amazonaws.com/\"\n",
        );
        assert_ne!(fingerprint(&a.stores[0]), fingerprint(&b.stores[0]));
        assert_eq!(fingerprint(&a.stores[0]), fingerprint(&a2.stores[0]));
        assert!(matches!(a.stores[0].location, StoreLocation::S3(_)));
    }
}
