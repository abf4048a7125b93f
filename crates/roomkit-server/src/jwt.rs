//! JWT logins: the server's [`Authenticator`] over [`roomkit_token::JwtAuthenticator`].
//!
//! Tokens (claims, requests, signing, the expiry rule) live in `roomkit-token`, shared with
//! the CLI; this adapter only maps its typed refusals to login errors. Build the authenticator
//! with `JwtAuthenticator::new(secret).with_clock(roomkit_server::clock::now_secs)` so that
//! token expiry is judged by the server's clock.

use async_trait::async_trait;
use roomkit_core::Identity;
use roomkit_protocol::UserUuid;
use roomkit_token::{JwtAuthenticator, VerifyError};

use crate::{AuthError, Authenticator};

impl From<VerifyError> for AuthError {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Expired => AuthError::Expired,
            other => AuthError::Invalid(other.to_string()),
        }
    }
}

#[async_trait]
impl Authenticator for JwtAuthenticator {
    async fn authenticate(&self, account_id: &UserUuid, token: &str) -> Result<Identity, AuthError> {
        Ok(self.identity(account_id, token)?)
    }
}

#[cfg(test)]
mod tests {
    use roomkit_protocol::Code;
    use roomkit_token::{Claims, TokenGrants};

    use super::*;

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims { sub: sub.into(), name: "Alice".into(), exp, grants: TokenGrants::default() }
    }

    #[tokio::test]
    async fn refusals_map_to_login_codes() {
        let auth = JwtAuthenticator::new(b"secret").with_clock(crate::clock::now_secs);
        let alice: UserUuid = "alice".parse().unwrap();
        let future = crate::clock::now_secs() + 3600;
        let id = auth.authenticate(&alice, &auth.mint(&claims("alice", future))).await.unwrap();
        assert_eq!(id.name, "Alice");
        let forged = JwtAuthenticator::new(b"other").mint(&claims("alice", future));
        let e = auth.authenticate(&alice, &forged).await.unwrap_err();
        assert_eq!(
            (e.code(), e.to_string()),
            (Code::UNAUTHENTICATED, "invalid credentials: bad token signature".into())
        );
        let e = auth.authenticate(&alice, &auth.mint(&claims("alice", 1_000))).await.unwrap_err();
        assert_eq!((e.clone(), e.code()), (AuthError::Expired, Code::AUTH_EXPIRED));
        let e = auth.authenticate(&"bob".parse().unwrap(), &auth.mint(&claims("alice", future))).await;
        assert_eq!(e.unwrap_err().code(), Code::UNAUTHENTICATED);
        let e = auth.authenticate(&alice, "not.a.jwt").await.unwrap_err();
        assert_eq!(e.code(), Code::UNAUTHENTICATED);
    }
}
