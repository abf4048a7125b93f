//! Validated identifiers.
//!
//! Every id on the wire is 1–64 characters of `A-Za-z0-9-_.~` (NERoom's rule for room
//! uuids, applied to every id so that ids are safe in URLs, logs and file names).

use std::{borrow::Borrow, fmt, str::FromStr, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest id accepted, in characters.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is the empty string.
    #[error("must not be empty")]
    Empty,
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("must be at most {MAX_ID_LEN} characters, got {0}")]
    TooLong(usize),
    /// The id contains a character outside `A-Za-z0-9-_.~`.
    #[error("may only contain A-Z a-z 0-9 - _ . ~ (found {0:?})")]
    BadChar(char),
}

fn validate(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong(s.chars().count()));
    }
    match s.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))) {
        Some(c) => Err(IdError::BadChar(c)),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Cheap to clone (a shared string). Construct with [`FromStr`] / [`TryFrom`]:
        /// invalid ids cannot exist.
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                validate(s)?;
                Ok(Self(Arc::from(s)))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A room's unique id (NERoom `roomUuid`), chosen by the creator.
    RoomUuid
);
id_type!(
    /// A user's id (NERoom `userUuid`): the account id the connection logged in with.
    UserUuid
);
id_type!(
    /// A chat message's id (NERoom `messageUuid`), chosen by the sending client so that a
    /// retried send is recognised.
    MessageUuid
);

/// Account ids the server keeps for itself, compared without regard to ASCII case: `backend`
/// is who the admin API acts as (rooms it creates, messages it sends), and `system` is how
/// backend messages are named by default. No login and no token may use them.
pub const RESERVED_USER_UUIDS: &[&str] = &["backend", "system"];

impl UserUuid {
    /// The identity the server's own admin API acts as: the creator of the rooms it creates
    /// and the sender of the messages it sends. Reserved: nobody can log in as it.
    pub fn backend() -> UserUuid {
        UserUuid(Arc::from(RESERVED_USER_UUIDS[0]))
    }

    /// Whether this id is one the server keeps for itself ([`RESERVED_USER_UUIDS`]).
    pub fn is_reserved(&self) -> bool {
        is_reserved_user_uuid(&self.0)
    }
}

/// Whether `id` is one of [`RESERVED_USER_UUIDS`], ignoring ASCII case.
pub fn is_reserved_user_uuid(id: &str) -> bool {
    RESERVED_USER_UUIDS.iter().any(|r| r.eq_ignore_ascii_case(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_own_ids_are_reserved_in_any_case() {
        assert!(UserUuid::backend().is_reserved());
        for id in ["backend", "Backend", "SYSTEM"] {
            assert!(UserUuid::new(id).unwrap().is_reserved(), "{id}");
        }
        assert!(!UserUuid::new("backend2").unwrap().is_reserved());
        assert!(!UserUuid::new("alice").unwrap().is_reserved());
    }

    #[test]
    fn accepts_the_documented_alphabet() {
        let id = RoomUuid::new("Az09-_.~").unwrap();
        assert_eq!(id.as_str(), "Az09-_.~");
        assert!(RoomUuid::new("a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert_eq!(RoomUuid::new(""), Err(IdError::Empty));
        assert_eq!(RoomUuid::new("a".repeat(65)), Err(IdError::TooLong(65)));
        assert_eq!(UserUuid::new("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(MessageUuid::new("é"), Err(IdError::BadChar('é')));
    }

    #[test]
    fn deserialising_validates() {
        let ok: UserUuid = serde_json::from_str("\"alice\"").unwrap();
        assert_eq!(ok.as_str(), "alice");
        let err = serde_json::from_str::<UserUuid>("\"al/ice\"").unwrap_err();
        assert!(err.to_string().contains("may only contain"), "{err}");
    }
}
