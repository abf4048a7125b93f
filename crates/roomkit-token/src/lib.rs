//! roomkit access tokens: the [`Claims`] of an HS256 JWT, the [`TokenRequest`] that mints
//! them, and the [`JwtAuthenticator`] that signs and checks them with one shared secret.
//!
//! Shared by the server (which turns a verified token into a connection's
//! [`Identity`](roomkit_core::Identity)) and the CLI (which mints tokens), so both agree on
//! what a token says without the CLI depending on the server.
//!
//! ```
//! use std::time::Duration;
//! use roomkit_token::{JwtAuthenticator, TokenRequest};
//!
//! let jwt = JwtAuthenticator::new(b"secret");
//! let issued = jwt.issue(TokenRequest::new("alice", Duration::from_secs(3600))).unwrap();
//! assert_eq!(jwt.verify(&issued.token).unwrap().sub, "alice");
//! ```
//!
//! Rules a token must pass: an HS256 signature with the secret; `sub` (a valid account id) and
//! `exp` (seconds since the Unix epoch) present; `exp` not more than [`LEEWAY_SECS`] in the
//! past. `name` and `grants` are optional. Time comes from the authenticator's clock (the
//! system clock unless [`JwtAuthenticator::with_clock`] gives another).

mod claims;
mod jwt;

pub use claims::{
    parse_duration, Claims, TokenError, TokenField, TokenGrants, TokenRequest, MAX_NAME_CHARS, MAX_TTL_SECS,
};
pub use jwt::{system_clock, Clock, IssuedToken, JwtAuthenticator, VerifyError, LEEWAY_SECS};
