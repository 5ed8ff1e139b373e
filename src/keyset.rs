//! A compact set of distinct keys: the reference set a scan holds (SPEC §9: "the reference set is
//! held as compact keys").
//!
//! Interner crates keep the text compactly too, but look a key up by re-reading every candidate's
//! text, and rehash all texts when they grow; at a million keys those cache misses were a third of
//! a scan. Here the table holds each key's 64-bit hash beside its number, so a probe reads the
//! text only to confirm a hit, and growing never touches the text.

use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;

#[derive(Default)]
pub struct KeySet {
    text: String,
    ends: Vec<usize>,
    table: HashTable<(u64, u32)>,
    hasher: DefaultHashBuilder,
}

impl KeySet {
    pub fn new() -> Self {
        KeySet::default()
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The key numbered `id`.
    pub fn get(&self, id: u32) -> &str {
        let i = id as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// The number of `key`, when the set holds it.
    pub fn find(&self, key: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |&(h, id)| h == hash && self.get(id) == key)
            .map(|&(_, id)| id)
    }

    /// Adds `key` (once) and returns its number.
    pub fn insert(&mut self, key: &str) -> u32 {
        let hash = self.hasher.hash_one(key);
        let KeySet {
            text, ends, table, ..
        } = self;
        let at = |id: u32| {
            let i = id as usize;
            let start = if i == 0 { 0 } else { ends[i - 1] };
            &text[start..ends[i]]
        };
        if let Some(&(_, id)) = table.find(hash, |&(h, id)| h == hash && at(id) == key) {
            return id;
        }
        let id = u32::try_from(ends.len()).expect("fewer than 4 billion distinct keys");
        text.push_str(key);
        ends.push(text.len());
        table.insert_unique(hash, (hash, id), |&(h, _)| h);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::KeySet;

    #[test]
    fn keys_are_held_once_and_found_exactly() {
        let mut s = KeySet::new();
        let a = s.insert("a/b.jpg");
        let b = s.insert("a/b.jp");
        assert_eq!(s.insert("a/b.jpg"), a);
        assert_ne!(a, b);
        assert_eq!(s.len(), 2);
        assert_eq!(s.find("a/b.jpg"), Some(a));
        assert_eq!(s.find("a/b.jp"), Some(b));
        assert_eq!(s.find("a/b"), None);
        assert_eq!(s.get(b), "a/b.jp");
        for i in 0..10_000 {
            s.insert(&format!("k{i}"));
        }
        assert_eq!(s.find("k9999").map(|id| s.get(id)), Some("k9999"));
        assert_eq!(s.find("a/b.jpg"), Some(a));
    }
}
