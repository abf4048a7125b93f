//! Replays every fuzz target's seed corpus (`seeds/TARGET/`) and saved crashes
//! (`regressions/TARGET/`) through its harness, as ordinary tests: what a fuzzer once found
//! stays fixed, and the seeds keep the harnesses honest without AFL installed.

use std::{
    fs,
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use roomkit_fuzz::{target, TARGETS};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files directly in `dir`, sorted; none when it does not exist.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.expect("a directory entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

/// Runs every seed and regression of `name`; fails naming each input that panics.
fn replay(name: &str) {
    let target = target(name).expect("a listed target");
    let seeds = inputs(&crate_dir().join("seeds").join(name));
    assert!(!seeds.is_empty(), "target {name} has no seeds");
    let regressions = inputs(&crate_dir().join("regressions").join(name));
    let mut failed = Vec::new();
    for path in seeds.iter().chain(&regressions) {
        let data = fs::read(path).expect("a readable input");
        if panic::catch_unwind(AssertUnwindSafe(|| (target.run)(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{name}: these inputs fail the harness:\n  {}", failed.join("\n  "));
}

#[test]
fn request_frame_seeds_and_regressions_pass() {
    replay("request_frame");
}

#[test]
fn ws_frames_seeds_and_regressions_pass() {
    replay("ws_frames");
}

#[test]
fn registry_seeds_and_regressions_pass() {
    replay("registry");
}

#[test]
fn store_record_seeds_and_regressions_pass() {
    replay("store_record");
}

#[test]
fn every_target_has_an_entry_point_a_replay_test_and_seeds() {
    let replay_tests = fs::read_to_string(crate_dir().join("tests/replay.rs")).expect("this file");
    for t in TARGETS {
        assert!(
            crate_dir().join("src/bin").join(format!("{}.rs", t.name)).is_file(),
            "{}: no AFL entry point",
            t.name
        );
        assert!(replay_tests.contains(&format!("replay(\"{}\")", t.name)), "{}: no replay test", t.name);
        assert!(crate_dir().join("seeds").join(t.name).is_dir(), "{}: no seeds", t.name);
    }
    let bins = fs::read_dir(crate_dir().join("src/bin")).expect("src/bin").count();
    assert_eq!(bins, TARGETS.len(), "an entry point in src/bin that TARGETS does not list");
}
