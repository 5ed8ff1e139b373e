//! A compact set of distinct keys: the reference set a scan holds (SPEC §9: "the reference set is
//! held as compact keys").
//!
//! Interner crates keep the text compactly too, but compare a probe against every candidate's
//! text; at a million keys those cache misses were a third of a scan. Here the table holds 32 bits
//! of each key's hash beside its number (8 bytes a slot), so a probe reads the text only to
//! confirm a hit.

use std::hash::BuildHasher;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;

#[derive(Default)]
pub struct KeySet {
    text: String,
    /// End of each key in `text`; u32 keeps the set compact (4 GiB of key text per store).
    ends: Vec<u32>,
    table: HashTable<(u32, u32)>,
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
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// The number of `key`, when the set holds it.
    pub fn find(&self, key: &str) -> Option<u32> {
        let short = short(self.hasher.hash_one(key));
        self.table
            .find(spread(short), |&(h, id)| h == short && self.get(id) == key)
            .map(|&(_, id)| id)
    }

    /// Adds `key` (once) and returns its number.
    pub fn insert(&mut self, key: &str) -> u32 {
        let short = short(self.hasher.hash_one(key));
        let hash = spread(short);
        let KeySet {
            text, ends, table, ..
        } = self;
        let at = |id: u32| {
            let i = id as usize;
            let start = if i == 0 { 0 } else { ends[i - 1] as usize };
            &text[start..ends[i] as usize]
        };
        if let Some(&(_, id)) = table.find(hash, |&(h, id)| h == short && at(id) == key) {
            return id;
        }
        let id = u32::try_from(ends.len()).expect("fewer than 4 billion distinct keys");
        table.insert_unique(hash, (short, id), |&(h, _)| spread(h));
        text.push_str(key);
        ends.push(u32::try_from(text.len()).expect("less than 4 GiB of key text in one store"));
        id
    }
}

/// The 32 bits of a key's hash kept in the table.
#[allow(clippy::cast_possible_truncation)]
fn short(hash: u64) -> u32 {
    hash as u32
}

/// The table's hash, rebuilt from the kept bits so that growing never reads a key's text:
/// hashbrown takes the bucket from the low bits and its 7-bit tag from the top ones, which here
/// repeat bits 25–31 — independent of the bucket up to 32 million slots.
fn spread(short: u32) -> u64 {
    u64::from(short) | (u64::from(short) << 32)
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
