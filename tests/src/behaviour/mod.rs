//! The behaviour cases, generic over the [`Harness`](crate::Harness).
//!
//! Each case is `pub async fn name<H: Harness>()`: it starts its own server, checks who
//! receives what, in which order and with which [`Code`](roomkit_protocol::Code), and stops the
//! server. [`behaviour_suite!`](crate::behaviour_suite) turns them into tests; a case added here
//! must be listed there too.

pub mod chatroom;
pub mod lifecycle;
pub mod messages;
pub mod room;
pub mod server;
