//! What a token says ([`Claims`]), what a new one should say ([`TokenRequest`]), and why a
//! request or a claim is refused ([`TokenError`]).

use std::time::Duration;

use roomkit_core::{Grants, Identity, RoomGrant};
use roomkit_protocol::{RoomUuid, UserUuid};
use serde::{Deserialize, Serialize};

/// Longest lifetime a minted token may have: ten years.
pub const MAX_TTL_SECS: u64 = 10 * 366 * 86_400;

/// Longest display name a minted token may carry, in characters: the server's default
/// longest member name (`CoreConfig::max_user_name_chars`), so that with pinned display
/// names the name is used as it is.
pub const MAX_NAME_CHARS: usize = 64;

/// The claims of a roomkit access token.
///
/// ```text
/// {"sub":"alice","name":"Alice","exp":1767225600,"grants":{"create_rooms":true,"rooms":["r1"],"admin":false}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account id (becomes the user uuid).
    pub sub: String,
    /// Display name; the account id when empty.
    #[serde(default)]
    pub name: String,
    /// Expiry, seconds since the Unix epoch. Required.
    pub exp: u64,
    /// What the holder may do; the defaults of [`TokenGrants`] when absent.
    #[serde(default)]
    pub grants: TokenGrants,
}

/// The grants inside a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrants {
    /// May create rooms (default true).
    #[serde(default = "yes")]
    pub create_rooms: bool,
    /// Rooms the holder may join; absent means every room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Room admin: host rights in every room (default false).
    #[serde(default)]
    pub admin: bool,
}

fn yes() -> bool {
    true
}

impl Default for TokenGrants {
    fn default() -> Self {
        Self { create_rooms: true, rooms: None, admin: false }
    }
}

/// The field of a token request (or of a token's claims) that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenField {
    /// The account id (`sub` in the claims).
    Account,
    /// The rooms the token may join (`grants.rooms`).
    Rooms,
    /// The lifetime.
    Ttl,
    /// The display name.
    Name,
}

impl TokenField {
    /// The field's name: `account`, `rooms`, `ttl` or `name`.
    pub fn name(self) -> &'static str {
        match self {
            TokenField::Account => "account",
            TokenField::Rooms => "rooms",
            TokenField::Ttl => "ttl",
            TokenField::Name => "name",
        }
    }
}

impl std::fmt::Display for TokenField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A token request or a token's claims refused: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct TokenError {
    /// The field refused.
    pub field: TokenField,
    /// Why, naming the offending value.
    pub reason: String,
}

impl TokenError {
    fn new(field: TokenField, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

/// What a new token grants, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The account id.
    pub account: String,
    /// Display name, at most [`MAX_NAME_CHARS`] characters; the account id when absent.
    pub name: Option<String>,
    /// Lifetime, at most [`MAX_TTL_SECS`].
    pub ttl: Duration,
    /// Rooms it may join; empty for every room.
    pub rooms: Vec<String>,
    /// Room admin.
    pub admin: bool,
    /// May create rooms.
    pub create_rooms: bool,
}

impl TokenRequest {
    /// A request for `account`, valid for `ttl`, with the default grants (create and join
    /// any room, no admin) and the account id as display name.
    pub fn new(account: impl Into<String>, ttl: Duration) -> Self {
        Self { account: account.into(), name: None, ttl, rooms: Vec::new(), admin: false, create_rooms: true }
    }

    /// The claims of a token minted at `now_secs` (seconds since the Unix epoch), after
    /// checking the account and room ids, the display name's length and the lifetime.
    pub fn claims(self, now_secs: u64) -> Result<Claims, TokenError> {
        let account = UserUuid::new(&self.account)
            .map_err(|e| TokenError::new(TokenField::Account, format!("`{}` {e}", self.account)))?;
        if account.is_reserved() {
            return Err(reserved(&self.account));
        }
        for room in &self.rooms {
            RoomUuid::new(room).map_err(|e| TokenError::new(TokenField::Rooms, format!("`{room}` {e}")))?;
        }
        if let Some(name) = &self.name {
            let chars = name.chars().count();
            if chars > MAX_NAME_CHARS {
                return Err(TokenError::new(
                    TokenField::Name,
                    format!("{chars} characters, at most {MAX_NAME_CHARS}"),
                ));
            }
        }
        let ttl = self.ttl.as_secs();
        if ttl > MAX_TTL_SECS {
            return Err(TokenError::new(TokenField::Ttl, format!("at most {MAX_TTL_SECS} seconds")));
        }
        Ok(Claims {
            name: self.name.unwrap_or_else(|| self.account.clone()),
            sub: self.account,
            exp: now_secs.saturating_add(ttl),
            grants: TokenGrants {
                create_rooms: self.create_rooms,
                rooms: (!self.rooms.is_empty()).then_some(self.rooms),
                admin: self.admin,
            },
        })
    }
}

/// The refusal of an account id the server keeps for itself.
fn reserved(account: &str) -> TokenError {
    TokenError::new(TokenField::Account, format!("`{account}` is reserved for the server's own use"))
}

impl Claims {
    /// The identity of a connection logged in with these (verified) claims.
    pub fn identity(&self) -> Result<Identity, TokenError> {
        let user = UserUuid::new(&self.sub)
            .map_err(|e| TokenError::new(TokenField::Account, format!("token subject `{}` {e}", self.sub)))?;
        if user.is_reserved() {
            return Err(reserved(&self.sub));
        }
        let join = match &self.grants.rooms {
            None => RoomGrant::All,
            Some(rooms) => RoomGrant::Only(
                rooms
                    .iter()
                    .map(|r| {
                        RoomUuid::new(r).map_err(|e| {
                            TokenError::new(TokenField::Rooms, format!("token room grant `{r}` {e}"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        let name = if self.name.is_empty() { self.sub.clone() } else { self.name.clone() };
        Ok(Identity {
            user,
            name,
            grants: Grants { create_rooms: self.grants.create_rooms, join, room_admin: self.grants.admin },
        })
    }
}

/// Parses a duration such as `90s`, `30m`, `1h`, `7d`, or plain seconds (token lifetimes
/// on command lines).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is not a duration like 90s, 30m, 1h or 7d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit `{unit}` in `{s}`: use s, m, h or d")),
    };
    let secs = n.checked_mul(scale).ok_or_else(|| format!("`{s}` is too long"))?;
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("300000000000000000d").unwrap_err().contains("too long"));
    }

    #[test]
    fn token_requests_check_ids_and_lifetime() {
        let request = |account: &str, ttl: u64, rooms: Vec<String>| TokenRequest {
            rooms,
            ..TokenRequest::new(account, Duration::from_secs(ttl))
        };
        let claims = request("alice", 60, vec!["r1".into()]).claims(1_000).unwrap();
        assert_eq!((claims.sub.as_str(), claims.name.as_str()), ("alice", "alice"));
        assert_eq!(claims.grants.rooms, Some(vec!["r1".to_string()]));
        assert_eq!(claims.exp, 1_060);
        let field = |r: TokenRequest| r.claims(0).unwrap_err().field;
        assert_eq!(field(request("a b", 60, vec![])), TokenField::Account);
        assert_eq!(field(request("alice", 60, vec!["bad room".into()])), TokenField::Rooms);
        assert_eq!(field(request("alice", MAX_TTL_SECS + 1, vec![])), TokenField::Ttl);
        let e = request("alice", 60, vec!["bad room".into()]).claims(0).unwrap_err();
        assert!(e.to_string().starts_with("rooms: `bad room` "), "{e}");
        assert!(request("alice", MAX_TTL_SECS, vec![]).claims(u64::MAX).is_ok(), "expiry saturates");
    }

    /// A name longer than a member's name may be is refused when the token is minted: with
    /// pinned display names it would have been cut at every join.
    #[test]
    fn a_display_name_longer_than_a_member_name_is_refused_at_minting() {
        let named = |name: String| TokenRequest {
            name: Some(name),
            ..TokenRequest::new("alice", Duration::from_secs(60))
        };
        assert!(named("é".repeat(MAX_NAME_CHARS)).claims(0).is_ok(), "characters, not bytes");
        let e = named("x".repeat(MAX_NAME_CHARS + 1)).claims(0).unwrap_err();
        assert_eq!(e.field, TokenField::Name);
        assert!(e.to_string().contains("at most 64"), "{e}");
    }

    #[test]
    fn claims_become_an_identity() {
        let mut claims = TokenRequest::new("alice", Duration::from_secs(60)).claims(0).unwrap();
        claims.name = String::new();
        claims.grants.rooms = Some(vec!["r1".into()]);
        let id = claims.identity().unwrap();
        assert_eq!(id.name, "alice", "an empty name is the account id");
        assert!(id.grants.join.allows(&"r1".parse().unwrap()));
        assert!(!id.grants.join.allows(&"r2".parse().unwrap()));
        claims.grants.rooms = Some(vec!["bad room".into()]);
        assert_eq!(claims.identity().unwrap_err().field, TokenField::Rooms);
        claims.sub = "a b".into();
        assert_eq!(claims.identity().unwrap_err().field, TokenField::Account);
    }

    #[test]
    fn the_servers_own_identities_cannot_be_minted_or_used() {
        for account in ["backend", "BACKEND", "system"] {
            let e = TokenRequest::new(account, Duration::from_secs(60)).claims(0).unwrap_err();
            assert_eq!(e.field, TokenField::Account);
            assert!(e.reason.contains("reserved"), "{e}");
        }
        // Claims signed some other way are refused when they become an identity.
        let mut claims = TokenRequest::new("alice", Duration::from_secs(60)).claims(0).unwrap();
        claims.sub = "backend".into();
        let e = claims.identity().unwrap_err();
        assert_eq!(e.field, TokenField::Account);
        assert!(e.reason.contains("reserved"), "{e}");
    }
}
