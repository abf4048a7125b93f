//! Signing and checking tokens: HS256 with one shared secret, time from a [`Clock`].

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use roomkit_core::Identity;
use roomkit_protocol::UserUuid;

use crate::{Claims, TokenError, TokenRequest};

/// Seconds a token is still accepted after its `exp`, for clocks that disagree a little.
pub const LEEWAY_SECS: u64 = 5;

/// Where an authenticator reads the time: seconds since the Unix epoch.
pub type Clock = fn() -> u64;

/// The system's wall clock, in seconds since the Unix epoch: the default [`Clock`].
pub fn system_clock() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The token was valid but its `exp` is more than [`LEEWAY_SECS`] in the past.
    #[error("credentials expired")]
    Expired,
    /// Not signed with this secret.
    #[error("bad token signature")]
    BadSignature,
    /// Not a JWT, not HS256, or its claims do not parse (`sub` and `exp` are required).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Signed and current, but one of its claims is invalid.
    #[error("token {0}")]
    Claim(TokenError),
    /// The token is for another account than the one logging in.
    #[error("the token is for `{token}`, not `{account}`")]
    WrongAccount {
        /// The account the token is for.
        token: String,
        /// The account logging in.
        account: String,
    },
}

/// A token just minted, with what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The signed token.
    pub token: String,
    /// Its claims (`exp` is the expiry to tell the holder).
    pub claims: Claims,
}

/// Signs and checks tokens with one shared secret.
#[derive(Clone)]
pub struct JwtAuthenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    clock: Clock,
}

impl std::fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtAuthenticator { .. }")
    }
}

impl JwtAuthenticator {
    /// An authenticator for tokens signed with `secret`, reading the [`system_clock`].
    pub fn new(secret: &[u8]) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            clock: system_clock,
        }
    }

    /// The same authenticator reading time from `clock` (the server passes its own clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Signs `claims` as they are.
    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// Checks `request` and signs its claims, minted now: the one path every token minter
    /// (CLI, admin API, the web page's development route) goes through.
    pub fn issue(&self, request: TokenRequest) -> Result<IssuedToken, TokenError> {
        let claims = request.claims((self.clock)())?;
        Ok(IssuedToken { token: self.mint(&claims), claims })
    }

    /// Checks a token's signature, required claims and expiry (with [`LEEWAY_SECS`]) and
    /// returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against this authenticator's clock.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|t| t.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => VerifyError::BadSignature,
                _ => VerifyError::Malformed(e.to_string()),
            })?;
        if claims.exp.saturating_add(LEEWAY_SECS) < (self.clock)() {
            return Err(VerifyError::Expired);
        }
        Ok(claims)
    }

    /// Checks that `token` is valid and for `account`, and returns the identity it grants.
    pub fn identity(&self, account: &UserUuid, token: &str) -> Result<Identity, VerifyError> {
        let claims = self.verify(token)?;
        if claims.sub != account.as_str() {
            return Err(VerifyError::WrongAccount { token: claims.sub, account: account.to_string() });
        }
        claims.identity().map_err(VerifyError::Claim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenGrants;

    const NOW: u64 = 1_800_000_000;

    fn at_now() -> u64 {
        NOW
    }

    fn jwt(secret: &[u8]) -> JwtAuthenticator {
        JwtAuthenticator::new(secret).with_clock(at_now)
    }

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims { sub: sub.into(), name: "Alice".into(), exp, grants: TokenGrants::default() }
    }

    #[test]
    fn a_minted_token_logs_its_account_in() {
        let auth = jwt(b"secret");
        let mut c = claims("alice", NOW + 3600);
        c.grants.rooms = Some(vec!["r1".into()]);
        let token = auth.mint(&c);
        let id = auth.identity(&"alice".parse().unwrap(), &token).unwrap();
        assert_eq!(id.name, "Alice");
        assert!(id.grants.join.allows(&"r1".parse().unwrap()));
        assert!(!id.grants.join.allows(&"r2".parse().unwrap()));
    }

    #[test]
    fn issued_tokens_expire_by_the_clock() {
        let issued =
            jwt(b"secret").issue(TokenRequest::new("alice", std::time::Duration::from_secs(60))).unwrap();
        assert_eq!(issued.claims.exp, NOW + 60);
        assert_eq!(jwt(b"secret").verify(&issued.token), Ok(issued.claims));
    }

    #[test]
    fn expiry_allows_the_leeway_and_no_more() {
        let auth = jwt(b"secret");
        assert!(auth.verify(&auth.mint(&claims("alice", NOW - LEEWAY_SECS))).is_ok());
        assert_eq!(
            auth.verify(&auth.mint(&claims("alice", NOW - LEEWAY_SECS - 1))),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn bad_signature_expiry_and_wrong_account_are_refused() {
        let auth = jwt(b"secret");
        let alice: UserUuid = "alice".parse().unwrap();
        let forged = jwt(b"other").mint(&claims("alice", NOW + 60));
        assert_eq!(auth.identity(&alice, &forged), Err(VerifyError::BadSignature));
        let expired = auth.mint(&claims("alice", 1_000));
        assert_eq!(auth.identity(&alice, &expired), Err(VerifyError::Expired));
        let token = auth.mint(&claims("alice", NOW + 60));
        let e = auth.identity(&"bob".parse().unwrap(), &token).unwrap_err();
        assert!(matches!(e, VerifyError::WrongAccount { .. }), "{e}");
        assert!(matches!(auth.identity(&alice, "not.a.jwt"), Err(VerifyError::Malformed(_))));
    }
}
