//! Signed access tokens: HS256 JWTs carrying the account and its grants.

use async_trait::async_trait;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roomkit_core::{Grants, Identity, RoomGrant};
use roomkit_protocol::{RoomUuid, UserUuid};
use serde::{Deserialize, Serialize};

use crate::{AuthError, Authenticator};

/// The claims of a roomkit access token.
///
/// ```text
/// {"sub":"alice","name":"Alice","exp":1767225600,"grants":{"create_rooms":true,"rooms":["r1"],"admin":false}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The account id (becomes the user uuid).
    pub sub: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// What the holder may do.
    #[serde(default)]
    pub grants: TokenGrants,
}

/// The grants inside a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrants {
    /// May create rooms.
    #[serde(default = "yes")]
    pub create_rooms: bool,
    /// Rooms the holder may join; absent means every room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    /// Room admin: host rights in every room.
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

/// What a new token grants, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    /// The account id.
    pub account: String,
    /// Display name; the account id when absent.
    pub name: Option<String>,
    /// Lifetime.
    pub ttl: std::time::Duration,
    /// Rooms it may join; empty for every room.
    pub rooms: Vec<String>,
    /// Room admin.
    pub admin: bool,
    /// May create rooms.
    pub create_rooms: bool,
}

impl TokenRequest {
    /// The claims of a token minted now, after checking the account and room ids and the
    /// lifetime (at most [`MAX_TTL_SECS`]). Errors name the field.
    pub fn claims(self) -> Result<Claims, String> {
        UserUuid::new(&self.account).map_err(|e| format!("account `{}`: {e}", self.account))?;
        for room in &self.rooms {
            RoomUuid::new(room).map_err(|e| format!("room `{room}`: {e}"))?;
        }
        let now = crate::shard::now_ms() / 1000;
        let exp =
            expiry(now, self.ttl.as_secs()).ok_or_else(|| format!("ttl: at most {MAX_TTL_SECS} seconds"))?;
        Ok(Claims {
            name: self.name.unwrap_or_else(|| self.account.clone()),
            sub: self.account,
            exp,
            grants: TokenGrants {
                create_rooms: self.create_rooms,
                rooms: (!self.rooms.is_empty()).then_some(self.rooms),
                admin: self.admin,
            },
        })
    }
}

/// Parses a duration such as `90s`, `30m`, `1h`, `7d`, or plain seconds (token lifetimes
/// on command lines).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
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
    Ok(std::time::Duration::from_secs(secs))
}

/// Longest lifetime a minted token may have: ten years.
pub const MAX_TTL_SECS: u64 = 10 * 366 * 86_400;

/// The expiry of a token minted now for `ttl_secs`, or `None` if the lifetime is over
/// [`MAX_TTL_SECS`].
pub fn expiry(now_secs: u64, ttl_secs: u64) -> Option<u64> {
    (ttl_secs <= MAX_TTL_SECS).then(|| now_secs.saturating_add(ttl_secs))
}

/// Signs and checks tokens with one shared secret.
#[derive(Clone)]
pub struct JwtAuthenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtAuthenticator { .. }")
    }
}

impl JwtAuthenticator {
    /// An authenticator for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret) }
    }

    /// Signs `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Checks a token's signature and expiry and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map(|t| t.claims).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad token signature".into()),
                _ => AuthError::Invalid(format!("malformed token: {e}")),
            }
        })
    }
}

/// Turns verified claims into the identity of a connection.
pub fn identity_from_claims(claims: &Claims) -> Result<Identity, AuthError> {
    let user = UserUuid::new(&claims.sub).map_err(|e| AuthError::Invalid(format!("token subject: {e}")))?;
    let join = match &claims.grants.rooms {
        None => RoomGrant::All,
        Some(rooms) => RoomGrant::Only(
            rooms
                .iter()
                .map(|r| RoomUuid::new(r).map_err(|e| AuthError::Invalid(format!("token room grant: {e}"))))
                .collect::<Result<_, _>>()?,
        ),
    };
    let name = if claims.name.is_empty() { claims.sub.clone() } else { claims.name.clone() };
    Ok(Identity {
        user,
        name,
        grants: Grants { create_rooms: claims.grants.create_rooms, join, room_admin: claims.grants.admin },
    })
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, account_id: &UserUuid, token: &str) -> Result<Identity, AuthError> {
        let claims = self.verify(token)?;
        if claims.sub != account_id.as_str() {
            return Err(AuthError::Invalid(format!("the token is for `{}`, not `{account_id}`", claims.sub)));
        }
        identity_from_claims(&claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims { sub: sub.into(), name: "Alice".into(), exp, grants: TokenGrants::default() }
    }

    fn far_future() -> u64 {
        crate::shard::now_ms() / 1000 + 3600
    }

    #[test]
    fn durations() {
        use std::time::Duration;
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
            account: account.into(),
            name: None,
            ttl: std::time::Duration::from_secs(ttl),
            rooms,
            admin: false,
            create_rooms: true,
        };
        let claims = request("alice", 60, vec!["r1".into()]).claims().unwrap();
        assert_eq!((claims.sub.as_str(), claims.name.as_str()), ("alice", "alice"));
        assert_eq!(claims.grants.rooms, Some(vec!["r1".to_string()]));
        assert!(request("a b", 60, vec![]).claims().unwrap_err().contains("account"));
        assert!(request("alice", 60, vec!["bad room".into()]).claims().unwrap_err().contains("room"));
        assert!(request("alice", MAX_TTL_SECS + 1, vec![]).claims().unwrap_err().contains("ttl"));
    }

    #[tokio::test]
    async fn a_minted_token_logs_its_account_in() {
        let auth = JwtAuthenticator::new(b"secret");
        let mut c = claims("alice", far_future());
        c.grants.rooms = Some(vec!["r1".into()]);
        let token = auth.mint(&c);
        let id = auth.authenticate(&"alice".parse().unwrap(), &token).await.unwrap();
        assert_eq!(id.name, "Alice");
        assert!(id.grants.join.allows(&"r1".parse().unwrap()));
        assert!(!id.grants.join.allows(&"r2".parse().unwrap()));
    }

    #[tokio::test]
    async fn bad_signature_expiry_and_wrong_account_are_refused() {
        let auth = JwtAuthenticator::new(b"secret");
        let forged = JwtAuthenticator::new(b"other").mint(&claims("alice", far_future()));
        let e = auth.authenticate(&"alice".parse().unwrap(), &forged).await.unwrap_err();
        assert_eq!(e.code(), roomkit_protocol::Code::UNAUTHENTICATED);
        let expired = auth.mint(&claims("alice", 1_000));
        let e = auth.authenticate(&"alice".parse().unwrap(), &expired).await.unwrap_err();
        assert_eq!(e, AuthError::Expired);
        assert_eq!(e.code(), roomkit_protocol::Code::AUTH_EXPIRED);
        let token = auth.mint(&claims("alice", far_future()));
        let e = auth.authenticate(&"bob".parse().unwrap(), &token).await.unwrap_err();
        assert_eq!(e.code(), roomkit_protocol::Code::UNAUTHENTICATED);
        let e = auth.authenticate(&"alice".parse().unwrap(), "not.a.jwt").await.unwrap_err();
        assert_eq!(e.code(), roomkit_protocol::Code::UNAUTHENTICATED);
    }
}
