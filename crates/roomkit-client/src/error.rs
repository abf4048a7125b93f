//! The SDK's one error type: NERoom's `code` + `msg`.

use roomkit_core::transport::TransportError;
use roomkit_protocol::{Code, IdError};

/// Why a call failed: a stable [`Code`] from the protocol's table and a human message.
///
/// ```
/// # use roomkit_client::Error;
/// # use roomkit_protocol::Code;
/// fn explain(e: &Error) -> String {
///     match e.code() {
///         Code::BAD_PASSWORD => "wrong password".into(),
///         Code::ROOM_FULL => "the room is full".into(),
///         _ => format!("code {} msg {}", e.code().0, e.msg()),
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code})")]
pub struct Error {
    code: Code,
    msg: String,
}

impl Error {
    /// An error with `code` and `msg`.
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self { code, msg: msg.into() }
    }

    /// The stable numeric code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message.
    pub fn msg(&self) -> &str {
        &self.msg
    }

    pub(crate) fn bad_id(field: &str, e: IdError) -> Self {
        Self::new(Code::BAD_REQUEST, format!("bad request: field `{field}`: {e}"))
    }

    pub(crate) fn transport(e: TransportError) -> Self {
        Self::new(Code::CONNECTION_CLOSED, e.to_string())
    }
}
