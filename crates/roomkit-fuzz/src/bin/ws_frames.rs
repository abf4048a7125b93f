//! AFL++ entry point of the `ws_frames` target: the server's WebSocket framing over loopback TCP, raw or from a script of frames.
//!
//! Built by `cargo xtask fuzz ws_frames` (under `cargo afl build`, with the `afl` feature);
//! the harness is [`roomkit_fuzz::ws_frames::run`], which `tests/replay.rs` also runs.

fn main() {
    afl::fuzz(true, roomkit_fuzz::ws_frames::run);
}
