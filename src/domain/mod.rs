//! The typed domain every layer speaks: object identity, scans and their findings, the queue's
//! entries and states, the API budget's figures, and the events that notifications and the API
//! consume. Plain data with serde; no I/O.

pub mod budget;
pub mod event;
pub mod queue;
pub mod scan;

use serde::{Deserialize, Serialize};

pub use crate::key::ResourceType;

/// Object identity (SPEC §2): `(store, resource_type, key)`. `resource_type` is empty outside
/// Cloudinary, whose `key` is the public_id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId {
    pub store: String,
    pub resource_type: ResourceType,
    pub key: String,
}

impl ObjectId {
    pub fn new(
        store: impl Into<String>,
        resource_type: ResourceType,
        key: impl Into<String>,
    ) -> Self {
        ObjectId {
            store: store.into(),
            resource_type,
            key: key.into(),
        }
    }
}

impl std::fmt::Display for ObjectId {
    /// `store key`, or `store image/key` on Cloudinary.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.resource_type {
            ResourceType::Plain => write!(f, "{} {}", self.store, self.key),
            rt => write!(f, "{} {}/{}", self.store, rt.as_str(), self.key),
        }
    }
}

/// A text column of the state database that holds one of a closed set of words; `parse` is the
/// inverse of `as_str` and knows nothing else.
pub trait Spelling: Sized + Copy + 'static {
    const ALL: &'static [Self];
    fn as_str(self) -> &'static str;
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// Serde for a [`Spelling`] enum: its word in JSON as in SQL.
macro_rules! spelled {
    ($t:ty, $what:literal) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::domain::Spelling::as_str(*self))
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t as $crate::domain::Spelling>::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(format!(concat!("`{}` is not a ", $what), s))
                })
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::domain::Spelling::as_str(*self))
            }
        }
    };
}
pub(crate) use spelled;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_ids_read_as_people_write_them() {
        let plain = ObjectId::new("media", ResourceType::Plain, "a/b.jpg");
        assert_eq!(plain.to_string(), "media a/b.jpg");
        let typed = ObjectId::new("cdn", ResourceType::Video, "clips/x");
        assert_eq!(typed.to_string(), "cdn video/clips/x");
        let json = serde_json::to_value(&typed).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"store": "cdn", "resource_type": "video", "key": "clips/x"})
        );
        let back: ObjectId = serde_json::from_value(json).expect("back");
        assert_eq!(back, typed);
    }
}
