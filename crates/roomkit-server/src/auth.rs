//! Login: account id + token → [`Identity`].

use async_trait::async_trait;
use roomkit_core::Identity;
use roomkit_protocol::{Code, UserUuid};

/// Why a login was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The credentials are not valid (bad signature, unknown account, empty token).
    #[error("invalid credentials: {0}")]
    Invalid(String),
    /// The credentials were valid but have expired.
    #[error("credentials expired")]
    Expired,
}

impl AuthError {
    /// The wire code: `UNAUTHENTICATED` or `AUTH_EXPIRED`.
    pub fn code(&self) -> Code {
        match self {
            AuthError::Invalid(_) => Code::UNAUTHENTICATED,
            AuthError::Expired => Code::AUTH_EXPIRED,
        }
    }
}

/// Checks credentials. The server calls it once per connection, on `login`; the identity it
/// returns is the connection's for good.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// Validates `token` for `account_id`.
    async fn authenticate(&self, account_id: &UserUuid, token: &str) -> Result<Identity, AuthError>;
}

/// Development only: accepts any non-empty token for any account, with the default grants
/// (create and join any room, no admin). Never use it on a reachable server.
#[derive(Debug, Clone, Copy, Default)]
pub struct DevAuthenticator;

#[async_trait]
impl Authenticator for DevAuthenticator {
    async fn authenticate(&self, account_id: &UserUuid, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Invalid("the token must not be empty".into()));
        }
        Ok(Identity::unrestricted(account_id.clone()))
    }
}
