//! A store held in memory, for unit tests of the code above the stores (the reconcile join):
//! objects with resource types, sizes and times, capabilities set by the test so that it can
//! stand in for a typed, metered store, and its calls counted like a backend's.
//!
//! Every call works on the map at the moment it is made; a listing reads a snapshot taken when
//! it starts, in key order.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    Capabilities, Gone, KeyError, ListOptions, ListStream, Listed, MoveOptions, Moved, Object,
    Store, StoreError, Usage, resolve_type, unusable,
};
use crate::key::{ResourceType, is_representable};

/// A listing call's page on a store that does not say (as object stores commonly return).
const PAGE: usize = 1000;

#[derive(Debug, Clone, Copy)]
struct Meta {
    size: u64,
    modified: DateTime<Utc>,
}

pub struct MemoryStore {
    name: String,
    caps: Capabilities,
    objects: Mutex<BTreeMap<(ResourceType, String), Meta>>,
    calls: AtomicU64,
    full_list_calls: AtomicU64,
}

impl MemoryStore {
    /// An empty store of plain keys: listings of 1000 a call, look-ups one call a key, and
    /// moves that refuse an existing destination when asked (as every store does).
    pub fn new(name: &str) -> Self {
        MemoryStore {
            name: name.to_string(),
            caps: Capabilities {
                atomic_no_replace: true,
                ..Capabilities::plain(PAGE)
            },
            objects: Mutex::default(),
            calls: AtomicU64::new(0),
            full_list_calls: AtomicU64::new(0),
        }
    }

    /// The same store answering with `caps`: resource types, a listing limited by `since`,
    /// look-ups billed `lookup_batch` keys a call, listing pages of `list_page`.
    #[must_use]
    pub fn with_capabilities(mut self, caps: Capabilities) -> Self {
        self.caps = caps;
        self
    }

    /// Puts an object, replacing one of the same resource type and key. Any name is taken: one
    /// that is not a representable key is listed as such.
    pub fn put(&self, resource_type: ResourceType, key: &str, size: u64, modified: DateTime<Utc>) {
        self.lock()
            .insert((resource_type, key.to_string()), Meta { size, modified });
    }

    /// Every object held, by resource type and key.
    pub fn keys(&self) -> Vec<(ResourceType, String)> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<(ResourceType, String), Meta>> {
        self.objects.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn typed(&self, resource_type: ResourceType) -> Result<ResourceType, StoreError> {
        resolve_type(&self.describe(), &self.caps.resource_types, resource_type)
    }

    fn count(&self, calls: usize) {
        self.calls.fetch_add(calls as u64, Ordering::Relaxed);
    }

    fn object(resource_type: ResourceType, key: &str, meta: Meta) -> Object {
        Object {
            resource_type,
            ..Object::plain(key.to_string(), Some(meta.size), Some(meta.modified))
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn describe(&self) -> String {
        format!("memory store {}", self.name)
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    fn usage(&self) -> Usage {
        Usage {
            api_calls: self.calls.load(Ordering::Relaxed),
            full_list_calls: self.full_list_calls.load(Ordering::Relaxed),
        }
    }

    async fn check(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn list(&self, opts: ListOptions) -> ListStream<'_> {
        let since = opts.since.filter(|_| self.caps.lists_since);
        let items: Vec<Listed> = self
            .lock()
            .iter()
            .filter(|((rt, _), _)| self.caps.resource_types.contains(rt))
            .filter(|((_, key), _)| {
                !opts
                    .exclude_prefixes
                    .iter()
                    .any(|p| key.starts_with(p.as_str()))
            })
            .filter(|(_, meta)| since.is_none_or(|t| meta.modified >= t))
            .map(|((rt, key), meta)| {
                if is_representable(key) {
                    Listed::Object(Self::object(*rt, key, *meta))
                } else {
                    Listed::Unrepresentable(key.escape_debug().to_string())
                }
            })
            .collect();
        let page = self.caps.list_page.max(1);
        let pages: Vec<Vec<Listed>> = items.chunks(page).map(<[_]>::to_vec).collect();
        // An empty store still costs the call that says so.
        let calls = pages.len().max(1);
        self.count(calls);
        if since.is_none() {
            self.full_list_calls
                .fetch_add(calls as u64, Ordering::Relaxed);
        }
        Box::pin(futures::stream::iter(pages.into_iter().map(Ok)))
    }

    async fn lookup_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Option<Object>>, StoreError> {
        let rt = self.typed(resource_type)?;
        let asked = keys.iter().filter(|k| is_representable(k)).count();
        self.count(match self.caps.lookup_batch {
            Some(batch) => asked.div_ceil(batch.max(1)),
            None => asked,
        });
        let objects = self.lock();
        Ok(keys
            .iter()
            .map(|k| {
                if !is_representable(k) {
                    return None;
                }
                objects
                    .get(&(rt, k.clone()))
                    .map(|meta| Self::object(rt, k, *meta))
            })
            .collect())
    }

    async fn delete_many(
        &self,
        resource_type: ResourceType,
        keys: &[String],
    ) -> Result<Vec<Result<Gone, KeyError>>, StoreError> {
        let rt = self.typed(resource_type)?;
        let sent = keys.iter().filter(|k| unusable(k).is_none()).count();
        self.count(sent.div_ceil(self.caps.lookup_batch.unwrap_or(PAGE).max(1)));
        let mut objects = self.lock();
        Ok(keys
            .iter()
            .map(|k| match unusable(k) {
                Some(why) => Err(why),
                None if objects.remove(&(rt, k.clone())).is_some() => Ok(Gone::Deleted),
                None => Ok(Gone::AlreadyGone),
            })
            .collect())
    }

    async fn move_many(
        &self,
        resource_type: ResourceType,
        moves: &[(String, String)],
        opts: MoveOptions,
    ) -> Result<Vec<Result<Moved, KeyError>>, StoreError> {
        let rt = self.typed(resource_type)?;
        let refuse = !opts.replace;
        let mut objects = self.lock();
        let mut out = Vec::with_capacity(moves.len());
        for (from, to) in moves {
            if let Some(why) = unusable(from).or_else(|| unusable(to)) {
                out.push(Err(why));
                continue;
            }
            self.count(1);
            let from_key = (rt, from.clone());
            let to_key = (rt, to.clone());
            if !objects.contains_key(&from_key) {
                out.push(Ok(Moved::SourceGone));
                continue;
            }
            if refuse && objects.contains_key(&to_key) {
                out.push(Err(KeyError::already_exists(format!(
                    "`{to}` exists; it is not replaced"
                ))));
                continue;
            }
            if let Some(meta) = objects.remove(&from_key) {
                objects.insert(to_key, meta);
            }
            out.push(Ok(Moved::Moved));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn keys(v: &[&str]) -> Vec<String> {
        v.iter().map(|k| (*k).to_string()).collect()
    }

    #[tokio::test]
    async fn a_metered_stand_in_counts_calls_by_its_capabilities() {
        let now = Utc::now();
        let store = MemoryStore::new("m").with_capabilities(Capabilities {
            resource_types: vec![ResourceType::Image, ResourceType::Video],
            lists_since: true,
            lookup_batch: Some(2),
            list_page: 2,
            checked_by_first_call: true,
            atomic_no_replace: true,
        });
        for k in ["a", "b", "c"] {
            store.put(ResourceType::Image, k, 1, now);
        }
        store.put(ResourceType::Video, "a", 2, now - chrono::Duration::days(3));
        store.put(ResourceType::Raw, "r", 3, now);

        let pages: Vec<_> = store.list(ListOptions::default()).collect().await;
        assert_eq!(pages.len(), 2, "4 objects of the listed types, 2 a page");
        assert_eq!(store.usage().full_list_calls, 2);
        let recent: Vec<_> = store
            .list(ListOptions {
                since: Some(now - chrono::Duration::days(1)),
                ..ListOptions::default()
            })
            .collect()
            .await;
        let listed: usize = recent.iter().map(|p| p.as_ref().map_or(0, Vec::len)).sum();
        assert_eq!(listed, 3, "the video is older than `since`");
        assert_eq!(
            store.usage().full_list_calls,
            2,
            "a listing since is not full"
        );

        let before = store.usage().api_calls;
        let found = store
            .lookup_many(ResourceType::Video, &keys(&["a", "b", "a//b"]))
            .await
            .expect("look-ups");
        assert_eq!(found[0].as_ref().map(|o| o.size), Some(Some(2)));
        assert!(found[1].is_none() && found[2].is_none());
        assert_eq!(
            store.usage().api_calls - before,
            1,
            "two usable keys, one call"
        );

        let wrong = store.lookup_many(ResourceType::Plain, &keys(&["a"])).await;
        assert!(
            matches!(&wrong, Err(StoreError::Permanent { message, .. }) if message.contains("needs its resource type")),
            "{wrong:?}"
        );
        assert!(
            store
                .lookup_many(ResourceType::Raw, &keys(&["r"]))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn deletes_and_moves_answer_like_a_store_that_can_tell() {
        let now = Utc::now();
        let store = MemoryStore::new("m");
        store.put(ResourceType::Plain, "a", 1, now);
        store.put(ResourceType::Plain, "b", 1, now);
        let out = store
            .move_many(
                ResourceType::Plain,
                &[("a".into(), "b".into()), ("x".into(), "y".into())],
                MoveOptions { replace: false },
            )
            .await
            .expect("moves");
        assert_eq!(
            out[0].as_ref().map_err(|e| e.kind),
            Err(super::super::KeyFailure::AlreadyExists)
        );
        assert_eq!(out[1], Ok(Moved::SourceGone));
        let out = store
            .delete_many(ResourceType::Plain, &keys(&["a", "a", "/x"]))
            .await
            .expect("deletes");
        assert_eq!(out[0], Ok(Gone::Deleted));
        assert_eq!(out[1], Ok(Gone::AlreadyGone));
        assert!(
            out[2]
                .as_ref()
                .is_err_and(|e| e.kind == super::super::KeyFailure::Permanent)
        );
        assert_eq!(store.keys(), [(ResourceType::Plain, "b".to_string())]);
    }
}
