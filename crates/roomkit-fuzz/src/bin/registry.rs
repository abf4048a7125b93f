//! AFL++ entry point of the `registry` target: core's RoomRegistry driven by a program of requests, disconnects, timeouts and commit results.
//!
//! Built by `cargo xtask fuzz registry` (under `cargo afl build`, with the `afl` feature);
//! the harness is [`roomkit_fuzz::registry::run`], which `tests/replay.rs` also runs.

fn main() {
    afl::fuzz(true, roomkit_fuzz::registry::run);
}
