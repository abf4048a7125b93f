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
    /// The account id is one the server keeps for itself
    /// ([`RESERVED_USER_UUIDS`](roomkit_protocol::RESERVED_USER_UUIDS)).
    #[error("account id `{0}` is reserved for the server's own use")]
    Reserved(UserUuid),
}

impl AuthError {
    /// The wire code: `UNAUTHENTICATED`, `AUTH_EXPIRED` or `RESERVED_ACCOUNT`.
    pub fn code(&self) -> Code {
        match self {
            AuthError::Invalid(_) => Code::UNAUTHENTICATED,
            AuthError::Expired => Code::AUTH_EXPIRED,
            AuthError::Reserved(_) => Code::RESERVED_ACCOUNT,
        }
    }
}

/// Logs `account_id` in through `authenticator`, unless it is reserved: the server's own
/// identities (the admin API's `backend`) are refused before any authenticator sees them, so
/// that no credentials, development ones included, can act as the server.
pub(crate) async fn log_in(
    authenticator: &dyn Authenticator,
    account_id: &UserUuid,
    token: &str,
) -> Result<Identity, AuthError> {
    if account_id.is_reserved() {
        return Err(AuthError::Reserved(account_id.clone()));
    }
    let identity = authenticator.authenticate(account_id, token).await?;
    if identity.user.is_reserved() {
        return Err(AuthError::Reserved(identity.user));
    }
    Ok(identity)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use roomkit_core::transport::{Connector, Listener};
    use roomkit_protocol::codec::{self, ServerFrame};

    use super::*;
    use crate::{Server, ServerConfig};

    /// Logs in over a raw in-memory connection to a server using `auth`; returns the reply.
    async fn login_with(auth: MockAuthenticator, frame: &'static str) -> (Code, String) {
        let (listener, connector) = roomkit_transport_memory::transport();
        let local = listener.local_addr();
        assert_eq!(local, "memory");
        let server = Server::new(ServerConfig::default(), Arc::new(auth)).spawn(listener);
        let mut conn = connector.connect().await.unwrap();
        conn.sink.send(&[frame.into()]).await.unwrap();
        let reply = conn.stream.recv().await.unwrap();
        server.shutdown().await;
        match codec::decode_server_frame(&reply).unwrap() {
            ServerFrame::Response(r) => (r.code, r.msg),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_expired_credential_is_answered_auth_expired() {
        let mut auth = MockAuthenticator::new();
        auth.expect_authenticate()
            .withf(|account, token| account.as_str() == "alice" && token == "old")
            .times(1)
            .returning(|_, _| Err(AuthError::Expired));
        let (code, msg) =
            login_with(auth, r#"{"id":1,"op":"login","account_id":"alice","token":"old"}"#).await;
        assert_eq!(code, Code::AUTH_EXPIRED, "{msg}");
    }

    #[tokio::test]
    async fn a_refused_credential_is_answered_unauthenticated_with_the_reason() {
        let mut auth = MockAuthenticator::new();
        auth.expect_authenticate().times(1).returning(|_, _| Err(AuthError::Invalid("revoked".into())));
        let (code, msg) = login_with(auth, r#"{"id":1,"op":"login","account_id":"bob","token":"t"}"#).await;
        assert_eq!(code, Code::UNAUTHENTICATED);
        assert!(msg.contains("revoked"), "{msg}");
    }

    #[tokio::test]
    async fn a_frame_that_is_not_a_login_never_reaches_the_authenticator() {
        let mut auth = MockAuthenticator::new();
        auth.expect_authenticate().times(0);
        let (code, _) = login_with(auth, r#"{"id":1,"op":"join_chatroom","room_uuid":"r"}"#).await;
        assert_eq!(code, Code::UNAUTHENTICATED);
    }

    #[tokio::test]
    async fn a_reserved_account_is_refused_before_the_authenticator_is_asked() {
        for account in ["backend", "System"] {
            let mut auth = MockAuthenticator::new();
            auth.expect_authenticate().times(0);
            let frame = format!(r#"{{"id":1,"op":"login","account_id":"{account}","token":"t"}}"#);
            let (code, msg) = login_with(auth, Box::leak(frame.into_boxed_str())).await;
            assert_eq!(code, Code::RESERVED_ACCOUNT, "{msg}");
            assert!(msg.contains(account) && msg.contains("reserved"), "{msg}");
        }
    }

    #[tokio::test]
    async fn the_development_authenticator_needs_a_token() {
        let alice: UserUuid = "alice".parse().unwrap();
        assert!(DevAuthenticator.authenticate(&alice, "x").await.is_ok());
        assert_eq!(
            DevAuthenticator.authenticate(&alice, "").await.unwrap_err().code(),
            Code::UNAUTHENTICATED
        );
    }
}
