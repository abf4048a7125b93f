//! Coverage-guided fuzz targets for roomkit, and the harness functions behind them.
//!
//! Each target is a function from arbitrary bytes to nothing that panics when something that
//! must always hold does not. The same function runs in two ways:
//!
//! - under AFL++ (`cargo xtask fuzz TARGET`), from the instrumented binary in `src/bin/`,
//!   built with the `afl` feature by `cargo afl build`;
//! - as an ordinary test (`tests/replay.rs`), over every file of the target's seed corpus
//!   (`seeds/TARGET/`) and every saved crash (`regressions/TARGET/`), so that a crash found
//!   once stays fixed.
//!
//! The targets are listed in [`TARGETS`]; `docs/fuzzing.md` says how to run them and what to
//! do with a crash.

pub mod input;
pub mod registry;
pub mod request_frame;
pub mod store_record;
pub mod ws_frames;

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: the AFL binary's name and the folder of its seeds and regressions.
    pub name: &'static str,
    /// What it feeds with the bytes, in one line.
    pub about: &'static str,
    /// The harness: panics when an invariant breaks.
    pub run: fn(&[u8]),
}

/// Every target, in the order `cargo xtask fuzz --list` shows them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "request_frame",
        about: "roomkit-protocol's codec: a client request frame (and a server frame) from arbitrary bytes",
        run: request_frame::run,
    },
    Target {
        name: "ws_frames",
        about: "the server's WebSocket framing (roomkit-transport-ws socket_connection) over loopback TCP",
        run: ws_frames::run,
    },
    Target {
        name: "registry",
        about:
            "core's RoomRegistry under requests, disconnects, timeouts and commit results from 5 connections",
        run: registry::run,
    },
    Target {
        name: "store_record",
        about: "the redb store's record decoding (messages and rooms), and re-encoding what decodes",
        run: store_record::run,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
