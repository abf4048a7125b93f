//! roomkit's core: the room and chatroom rules as sans-IO state machines, and the traits
//! transports implement.
//!
//! - [`RoomRegistry`] owns rooms, their members and their chatrooms. Feed it inputs
//!   (`handle_*`, with the current time), make its commit durable (`take_commit`, then
//!   `handle_commit`), then drain its outputs (`poll_output`) and ask when to wake it next
//!   (`poll_timeout`). It never blocks, spawns or reads a clock, so every rule is unit-tested
//!   here without a runtime.
//! - [`transport`] defines how a driver accepts connections and moves whole frames; the
//!   `conformance` feature exports the suite every transport runs.
//!
//! Nothing here knows about tokio, sockets or the clock.

mod chatroom;
pub mod config;
mod error;
mod history;
mod identity;
mod rate;
mod registry;
mod room;
mod roster;
pub mod store;
mod tally;
pub mod transport;
mod validate;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use config::{CoreConfig, MessageRate};
pub use error::Error;
pub use history::{HistoryRead, HistoryRequest};
pub use identity::{Grants, Identity, RoomGrant};
pub use registry::{Output, RoomRegistry};
pub use roster::{Audience, ConnId, ConnIdHasher, ConnMap, RosterKind};
pub use tally::RoomTally;
