//! Replays inputs through a fuzz target's harness, without AFL: for reading a crash.
//!
//! ```text
//! cargo run -p roomkit-fuzz -- TARGET FILE...      # what `cargo xtask fuzz TARGET --replay FILE` runs
//! ROOMKIT_FUZZ_TRACE=1 cargo run -p roomkit-fuzz -- registry FILE   # and print each step
//! ```
//!
//! Exits non-zero when a file makes the harness panic (the panic message says which
//! invariant broke).

use std::{env, fs, panic, process};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let Some((name, files)) = args.split_first().filter(|(_, files)| !files.is_empty()) else {
        eprintln!("usage: roomkit-fuzz TARGET FILE...\n\ntargets:");
        for t in roomkit_fuzz::TARGETS {
            eprintln!("  {:<14} {}", t.name, t.about);
        }
        process::exit(2);
    };
    let Some(target) = roomkit_fuzz::target(name) else {
        eprintln!("error: no fuzz target `{name}` (run without arguments for the list)");
        process::exit(2);
    };
    let mut failed = 0;
    for file in files {
        let data = match fs::read(file) {
            Ok(data) => data,
            Err(e) => {
                eprintln!("error: cannot read {file}: {e}");
                process::exit(2);
            }
        };
        match panic::catch_unwind(|| (target.run)(&data)) {
            Ok(()) => eprintln!("ok     {file}"),
            Err(_) => {
                eprintln!("FAILED {file}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} of {} inputs failed the `{name}` harness", files.len());
        process::exit(1);
    }
}
