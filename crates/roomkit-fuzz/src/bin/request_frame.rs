//! AFL++ entry point of the `request_frame` target: roomkit-protocol's codec: a client request frame, and a server frame, from arbitrary bytes.
//!
//! Built by `cargo xtask fuzz request_frame` (under `cargo afl build`, with the `afl` feature);
//! the harness is [`roomkit_fuzz::request_frame::run`], which `tests/replay.rs` also runs.

fn main() {
    afl::fuzz(true, roomkit_fuzz::request_frame::run);
}
