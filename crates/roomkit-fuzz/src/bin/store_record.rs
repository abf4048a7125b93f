//! AFL++ entry point of the `store_record` target: the redb store's record decoding, and re-encoding what decodes.
//!
//! Built by `cargo xtask fuzz store_record` (under `cargo afl build`, with the `afl` feature);
//! the harness is [`roomkit_fuzz::store_record::run`], which `tests/replay.rs` also runs.

fn main() {
    afl::fuzz(true, roomkit_fuzz::store_record::run);
}
