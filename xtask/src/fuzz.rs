//! `cargo xtask fuzz`: coverage-guided fuzzing of roomkit's targets (`crates/roomkit-fuzz`)
//! with AFL++, through afl.rs (`cargo afl`), on the stable toolchain.
//!
//! - `cargo xtask fuzz --list` lists the targets (one AFL entry point each in the crate's
//!   `src/bin/`).
//! - `cargo xtask fuzz TARGET --secs N` installs what AFL++ needs when it is missing (make and
//!   a C compiler through apt when run as root, then `cargo install cargo-afl`, which builds
//!   AFL++ from the source it ships), builds the target with coverage instrumentation into
//!   `target/afl` (away from the workspace's own build, which is never instrumented; cargo
//!   skips the build when it is fresh), runs `afl-fuzz` on the target's seeds for N seconds
//!   into `target/fuzz/TARGET`, and reports executions, speed, corpus and crashes. It fails
//!   on a crash, printing the crash file and how to replay it.
//! - `cargo xtask fuzz TARGET --replay FILE...` runs files through the target's harness in an
//!   ordinary build (`cargo run -p roomkit-fuzz`), to read a crash.
//!
//! `cargo xtask test` ends with [`smoke`]: every target for [`SMOKE_SECS`] seconds.

use std::{
    collections::HashMap,
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::system::{self, SystemPackage};

/// The fuzz crate, relative to the project root.
const FUZZ_CRATE: &str = "crates/roomkit-fuzz";

/// Where the instrumented build goes: its own target directory, so that the instrumented
/// flags never invalidate (or leak into) the workspace's normal build.
const AFL_TARGET_DIR: &str = "target/afl";

/// Where each target's AFL output goes (`target/fuzz/TARGET`), replaced at every run.
const OUT_DIR: &str = "target/fuzz";

/// The cargo-afl release installed when missing; the same as the `afl` crate in Cargo.lock.
const CARGO_AFL_VERSION: &str = "0.18.2";

/// Seconds each target is fuzzed by `cargo xtask test`.
pub(crate) const SMOKE_SECS: u64 = 10;

/// How much longer than its fuzzing time afl-fuzz may take (start-up, calibrating the seeds)
/// before it is stopped.
const AFL_GRACE: Duration = Duration::from_secs(180);

/// What building AFL++ and the instrumented targets needs beyond Rust.
const AFL_PACKAGES: &[SystemPackage] = &[
    system::MAKE,
    SystemPackage { name: "gcc", provides: "/usr/bin/gcc", needed_by: "building AFL++ (cargo afl)" },
    SystemPackage {
        name: "libc6-dev",
        provides: "/usr/include/stdio.h",
        needed_by: "building AFL++ (cargo afl)",
    },
];

/// The environment afl-fuzz runs with: no curses UI; and what containers and shared
/// machines need (no CPU frequency governor to check, no core-dump handler to insist on,
/// no core to pin to).
const AFL_ENV: &[(&str, &str)] = &[
    ("AFL_NO_UI", "1"),
    ("AFL_SKIP_CPUFREQ", "1"),
    ("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES", "1"),
    ("AFL_NO_AFFINITY", "1"),
    ("AFL_FAST_CAL", "1"),
];

/// `cargo xtask fuzz ARGS`.
pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let usage = "usage: cargo xtask fuzz --list | TARGET [--secs N] | TARGET --replay FILE...";
    match args {
        [flag] if flag == "--list" => {
            for (name, about) in targets()? {
                println!("{name:<14} {about}");
            }
            Ok(())
        }
        [target, flag, files @ ..] if flag == "--replay" && !files.is_empty() => {
            known(target)?;
            let mut full = vec!["run", "--quiet", "--package", "roomkit-fuzz", "--", target.as_str()];
            full.extend(files.iter().map(String::as_str));
            crate::cmd("cargo", &full)
        }
        [target, rest @ ..] if !target.starts_with('-') => {
            let secs = match rest {
                [] => 60,
                [flag, n] if flag == "--secs" => {
                    n.parse().map_err(|_| format!("--secs wants seconds, not `{n}`"))?
                }
                _ => return Err(usage.into()),
            };
            known(target)?;
            prepare(&[target.as_str()])?;
            let run = fuzz(target, secs)?;
            run.report();
            run.verdict()
        }
        _ => Err(usage.into()),
    }
}

/// `cargo xtask test`'s fuzz step: every target for `secs` seconds; fails on any crash.
pub(crate) fn smoke(secs: u64) -> Result<(), String> {
    let names: Vec<String> = targets()?.into_iter().map(|(name, _)| name).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    prepare(&refs)?;
    let mut failures = Vec::new();
    for name in &names {
        let run = fuzz(name, secs)?;
        run.report();
        if let Err(e) = run.verdict() {
            failures.push(e);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// The targets: (name, what it fuzzes), from the entry points in the crate's `src/bin/`.
fn targets() -> Result<Vec<(String, String)>, String> {
    let dir = Path::new(FUZZ_CRATE).join("src/bin");
    let entries = fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut targets = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // "//! AFL++ entry point of the `NAME` target: WHAT."
        let first = text.lines().next().unwrap_or_default();
        let about = first.split_once("target: ").map_or(first, |(_, about)| about);
        targets.push((name.to_owned(), about.trim_end_matches('.').to_owned()));
    }
    targets.sort();
    Ok(targets)
}

fn known(target: &str) -> Result<(), String> {
    if targets()?.iter().any(|(name, _)| name == target) {
        Ok(())
    } else {
        Err(format!("no fuzz target `{target}`; `cargo xtask fuzz --list` lists them"))
    }
}

/// Makes sure AFL++ and cargo-afl are installed, then builds `names` instrumented.
fn prepare(names: &[&str]) -> Result<(), String> {
    system::ensure(AFL_PACKAGES)?;
    if !crate::cargo_subcommand_works("afl") {
        crate::cmd("cargo", &["install", "--locked", "cargo-afl", "--version", CARGO_AFL_VERSION])?;
    }
    build_afl_runtime()?;
    let mut args = vec![
        "afl",
        "build",
        "--package",
        "roomkit-fuzz",
        "--features",
        "afl",
        "--target-dir",
        AFL_TARGET_DIR,
    ];
    for name in names {
        args.extend(["--bin", name]);
    }
    crate::cmd("cargo", &args)
}

/// Builds AFL++ for this toolchain unless it is built (installing cargo-afl builds it; a new
/// Rust release needs it again).
fn build_afl_runtime() -> Result<(), String> {
    let out = Command::new("cargo")
        .args(["afl", "config", "--build"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo afl: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() || stderr.contains("already built") {
        Ok(())
    } else {
        Err(format!("`cargo afl config --build` failed:\n{stderr}"))
    }
}

/// One finished afl-fuzz run.
struct Run {
    target: String,
    out: PathBuf,
    stats: HashMap<String, String>,
    crashes: Vec<PathBuf>,
    hangs: usize,
    wall: Duration,
}

/// Fuzzes `target` for `secs` seconds from its seeds, into a fresh `target/fuzz/TARGET`.
fn fuzz(target: &str, secs: u64) -> Result<Run, String> {
    let seeds = Path::new(FUZZ_CRATE).join("seeds").join(target);
    let out = Path::new(OUT_DIR).join(target);
    let binary = Path::new(AFL_TARGET_DIR).join("debug").join(target);
    if out.exists() {
        fs::remove_dir_all(&out).map_err(|e| format!("cannot clear {}: {e}", out.display()))?;
    }
    fs::create_dir_all(OUT_DIR).map_err(|e| format!("cannot create {OUT_DIR}: {e}"))?;
    let log_path = Path::new(OUT_DIR).join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let secs_text = secs.to_string();
    let args = [
        "afl",
        "fuzz",
        "-i",
        path_str(&seeds)?,
        "-o",
        path_str(&out)?,
        "-V",
        &secs_text,
        "--",
        path_str(&binary)?,
    ];
    eprintln!("==> {} (output in {})", crate::command_line("cargo", &args, AFL_ENV), log_path.display());
    let start = Instant::now();
    let mut child = Command::new("cargo")
        .args(args)
        .envs(AFL_ENV.iter().copied())
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start afl-fuzz: {e}"))?;
    let deadline = Duration::from_secs(secs) + AFL_GRACE;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("afl-fuzz on {target} ran past {deadline:?}; see {}", log_path.display()));
        }
        thread::sleep(Duration::from_millis(200));
    };
    let wall = start.elapsed();
    let stats_path = out.join("default/fuzzer_stats");
    let Ok(stats_text) = fs::read_to_string(&stats_path) else {
        let log = fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!("afl-fuzz on {target} failed ({status}) without stats:\n{}", tail.join("\n")));
    };
    let stats = stats_text
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let crashes = findings(&out.join("default/crashes"));
    let hangs = findings(&out.join("default/hangs")).len();
    Ok(Run { target: target.to_owned(), out, stats, crashes, hangs, wall })
}

/// The inputs AFL saved in `dir` (not its README).
fn findings(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n != "README.txt"))
        .collect();
    files.sort();
    files
}

fn path_str(path: &Path) -> Result<&str, String> {
    path.to_str().ok_or_else(|| format!("path is not UTF-8: {}", path.display()))
}

impl Run {
    fn stat(&self, key: &str) -> &str {
        self.stats.get(key).map_or("?", String::as_str)
    }

    fn report(&self) {
        eprintln!(
            "==> fuzz {}: {} executions in {}s of fuzzing ({} exec/s; {:.0}s in all), corpus {} inputs, \
             coverage {}, stability {}, {} crashes, {} hangs",
            self.target,
            self.stat("execs_done"),
            self.stat("run_time"),
            self.stat("execs_per_sec"),
            self.wall.as_secs_f64(),
            self.stat("corpus_count"),
            self.stat("bitmap_cvg"),
            self.stat("stability"),
            self.crashes.len(),
            self.hangs,
        );
        if self.hangs > 0 {
            eprintln!(
                "    hangs (inputs over AFL's time limit) are in {}",
                self.out.join("default/hangs").display()
            );
        }
    }

    /// An error naming every crash and how to replay and keep it.
    fn verdict(&self) -> Result<(), String> {
        if self.crashes.is_empty() {
            return Ok(());
        }
        let target = &self.target;
        let mut text = format!("fuzz target `{target}` crashed on {} input(s):", self.crashes.len());
        for crash in &self.crashes {
            text.push_str(&format!("\n    {}", crash.display()));
        }
        let first = self.crashes[0].display();
        text.push_str(&format!(
            "\nReplay one (the panic says which invariant broke; ROOMKIT_FUZZ_TRACE=1 prints the registry's steps):\
             \n    cargo xtask fuzz {target} --replay '{first}'\
             \nOnce fixed, keep it as a regression test:\
             \n    mkdir -p {FUZZ_CRATE}/regressions/{target} && cp '{first}' {FUZZ_CRATE}/regressions/{target}/NAME\
             \n    cargo test -p roomkit-fuzz --test replay"
        ));
        Err(text)
    }
}

/// Seconds of the smoke run, from `ROOMKIT_FUZZ_SMOKE_SECS` (0 skips it) or [`SMOKE_SECS`].
pub(crate) fn smoke_secs() -> Result<u64, String> {
    match env::var("ROOMKIT_FUZZ_SMOKE_SECS") {
        Ok(text) => text.parse().map_err(|_| format!("ROOMKIT_FUZZ_SMOKE_SECS wants seconds, not `{text}`")),
        Err(_) => Ok(SMOKE_SECS),
    }
}
