//! The Cloudinary store through the `Store` trait, against the Admin API emulator: listings of
//! every type, look-ups and deletes of up to 100 public_ids a call with `not_found` counted as
//! done, the quarantine prefix left out, and errors that name the API's message.

mod common;

use std::sync::Arc;

use assetgc::key::ResourceType;
use assetgc::store::{self, Ledger, ListOptions, Listed, Store};
use chrono::Utc;
use common::cloudinary::{Emulator, Options, Resource};
use futures::StreamExt;

fn open(emulator: &Emulator, extra: &str) -> Arc<dyn Store> {
    let text = format!(
        "[stores.media]\nurl = \"{}\"\n{extra}\n",
        emulator.cloudinary_url()
    );
    let cfg = assetgc::config::parse(&text, "test.toml", std::path::Path::new("."), &|_| None)
        .expect("config");
    store::open(&cfg.stores[0], &Ledger::default()).expect("store")
}

async fn list_all(store: &dyn Store, opts: ListOptions) -> Vec<Listed> {
    let mut out = Vec::new();
    let mut pages = store.list(opts);
    while let Some(page) = pages.next().await {
        out.extend(page.expect("page"));
    }
    out
}

#[tokio::test]
async fn lists_every_type_500_a_call_and_leaves_the_quarantine_out() {
    let emulator = Emulator::start(Options::default());
    let now = Utc::now();
    emulator.add_many((0..1001).map(|i| Resource::image(&format!("i/{i:04}"), now)));
    emulator.add_many((0..3).map(|i| Resource::video(&format!("v/{i}"), now)));
    emulator.add(Resource::raw("r/notes.txt", now));
    emulator.add(Resource::image("assetgc-trash/20260101T000000Z/x", now));
    let store = open(
        &emulator,
        "resource_types = [\"image\", \"video\", \"raw\"]",
    );
    emulator.reset_calls();
    let listed = list_all(
        store.as_ref(),
        ListOptions {
            exclude_prefixes: vec!["assetgc-trash/".into()],
            ..ListOptions::default()
        },
    )
    .await;
    let mut by_type = std::collections::BTreeMap::new();
    for item in &listed {
        let Listed::Object(o) = item else {
            panic!("{item:?}")
        };
        *by_type.entry(o.resource_type.as_str()).or_insert(0) += 1;
        assert!(
            o.modified.is_some() && o.size.is_some() && o.url.is_some(),
            "{o:?}"
        );
        assert!(!o.key.starts_with("assetgc-trash/"));
    }
    assert_eq!(
        by_type,
        [("image", 1001), ("raw", 1), ("video", 3)]
            .into_iter()
            .collect()
    );
    // 1,002 images: 3 pages; one each for videos and raw.
    assert_eq!(emulator.calls(), 5);
    assert_eq!(store.api_calls(), 5);
    assert_eq!(store.full_list_calls(), 5);
}

#[tokio::test]
async fn looks_up_and_deletes_100_public_ids_a_call() {
    let emulator = Emulator::start(Options::default());
    let now = Utc::now();
    emulator.add_many((0..200).map(|i| Resource::image(&format!("p/{i:03}"), now)));
    emulator.add(Resource::video("p/000", now));
    let store = open(&emulator, "");
    // 200 that exist, 50 that do not, and one that is not a usable key.
    let mut keys: Vec<String> = (0..250).map(|i| format!("p/{i:03}")).collect();
    keys.push("p//bad".into());

    emulator.reset_calls();
    let found = store
        .head_many_of(ResourceType::Image, &keys)
        .await
        .expect("look-ups");
    assert_eq!(found.len(), keys.len());
    assert!(found[..200].iter().all(Option::is_some));
    assert!(found[200..].iter().all(Option::is_none));
    assert_eq!(
        found[0].as_ref().map(|o| o.resource_type),
        Some(ResourceType::Image)
    );
    assert_eq!(emulator.calls(), 3, "250 usable keys: 3 calls");

    emulator.reset_calls();
    let outcomes = store
        .delete_many_of(ResourceType::Image, &keys)
        .await
        .expect("deletes");
    // Deleted or not found: both done. The unusable key fails alone, never sent.
    assert!(outcomes[..250].iter().all(Result::is_ok), "{outcomes:?}");
    assert!(outcomes[250].is_err());
    assert_eq!(emulator.calls_to("DELETE /resources/image/upload"), 3);
    assert!(!emulator.exists("image", "p/000"));
    // The video of the same public_id is another object: untouched.
    assert!(emulator.exists("video", "p/000"));
    // A store that lists two types cannot take a key without one.
    assert!(store.delete_many(&["p/000".to_string()]).await.is_err());
}

#[tokio::test]
async fn a_failing_call_names_the_store_api_and_its_message() {
    let emulator = Emulator::start(Options::default());
    let store = open(&emulator, "");
    emulator.fail_next(5, 500);
    let err = store
        .head_many_of(ResourceType::Image, &["a".to_string()])
        .await
        .expect_err("five 500s in a row");
    let msg = err.to_string();
    assert!(msg.contains("HTTP 500"), "{msg}");
    // Fewer failures than tries: retried to success.
    emulator.fail_next(2, 503);
    assert!(
        store
            .head_many_of(ResourceType::Image, &["a".to_string()])
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn refused_credentials_are_unreachable_and_never_show_the_secret() {
    let emulator = Emulator::start(Options::default());
    let text = format!(
        "[stores.media]\nurl = \"{}\"\n",
        emulator
            .cloudinary_url()
            .replace("emulator-secret", "not-the-secret")
    );
    let cfg = assetgc::config::parse(&text, "t.toml", std::path::Path::new("."), &|_| None)
        .expect("config");
    assert!(!format!("{:?}", cfg.stores[0]).contains("not-the-secret"));
    let store = store::open(&cfg.stores[0], &Ledger::default()).expect("store");
    match store.check().await {
        Err(store::StoreError::Unreachable(msg)) => {
            assert!(msg.contains("refused"), "{msg}");
            assert!(!msg.contains("not-the-secret"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}
