//! Project automation for the roomkit workspace, in the style of
//! rust-analyzer's `xtask`.
//!
//! Invoke it through the cargo alias defined in `.cargo/config.toml`:
//!
//! ```text
//! cargo xtask test            # tidy, fmt check, clippy, tests, docs
//! cargo xtask test -- FILTER  # only the tests, with FILTER passed to the runner
//! cargo xtask tidy            # only the tidy check (see `tidy.rs`)
//! cargo xtask run [ARGS...]   # run the demo
//! cargo xtask bench [ARGS...] # run the benchmark crate
//! cargo xtask bench --cluster # the benchmark of cluster mode (1 and 3 nodes on one NATS)
//! cargo xtask cluster        # a three-node cluster on this machine
//! cargo xtask fuzz TARGET     # coverage-guided fuzzing with AFL++ (see `fuzz.rs`)
//! ```
//!
//! This crate deliberately uses only `std`: avoid adding dependencies to it,
//! so that it stays quick to build.

mod cluster;
mod fuzz;
mod system;
mod tidy;

use std::env;
use std::fs;
use std::path::Path;
use std::process::{self, Command, Stdio};
use std::time::Instant;

/// Usage text printed by `cargo xtask help` and on invalid invocations.
const USAGE: &str = "\
Usage: cargo xtask <COMMAND> [ARGS...]

Commands:
  test              Install the system packages the tests need when missing
                    (Chromium and its WebDriver, through apt when run as root;
                    otherwise stop and print the command), run the tidy check,
                    check formatting (cargo fmt), lint (cargo clippy -D warnings),
                    run all tests (cargo-nextest plus doctests when nextest is
                    installed, cargo test otherwise), fuzz every fuzz target
                    for 10 s (see `fuzz`; AFL++ is installed when missing;
                    ROOMKIT_FUZZ_SMOKE_SECS sets the seconds, 0 skips it) and
                    build the docs with RUSTDOCFLAGS=\"-D warnings\". Stops at
                    the first failing step.
  test -- ARGS...   Only run the tests, appending ARGS to the test runner
                    (`cargo nextest run` if installed, else `cargo test`);
                    tidy, formatting, clippy, docs and doctests are skipped.
                    Example: cargo xtask test -- some_filter
  tidy              Only the tidy check: module comments, file lengths, no
                    ignored tests, registered behaviour cases, documented
                    metrics, code names in docs/architecture.md that exist.
  run [ARGS...]     Start roomkit-server in development mode on 127.0.0.1
                    (clients ws://127.0.0.1:7700/v1, admin http://127.0.0.1:7701,
                    rooms and history kept in target/roomkit-data),
                    passing ARGS to it (see `cargo xtask run -- --help`).
  demo              Run the in-process demo: a server and three members over
                    the in-memory transport, printing what each member sees.
  bench [ARGS...]   Install redis-server when missing (the baseline the fan-out
                    is compared against) and nats-server (the cluster a join
                    storm too large for one process runs on); through apt when
                    run as root, otherwise stop and print the command; then
                    run the benchmarks
                    (crates/roomkit-bench) in release mode, passing ARGS to
                    them (see `cargo xtask bench -- --help`).
  bench --cluster [ARGS...]
                    Install nats-server when missing, then the cluster
                    benchmark: one nats-server, 1 and then 3 release
                    roomkit-server nodes on it, one room owned by node 1 with
                    its members spread over the nodes; deliveries per second,
                    p99 at 100 and 1000 msg/s, each node's CPU µs per delivery
                    and durable sends; written to docs/bench/cluster.json.
  cluster [ARGS...]  A three-node cluster on this machine: install nats-server
                    when missing, start it with JetStream (data in
                    target/cluster/nats) and three roomkit-server nodes in
                    development mode on it (clients ws://127.0.0.1:7700/v1,
                    :7710, :7720; admin :7701, :7711, :7721), passing ARGS to
                    each node. Ctrl-C stops everything.
  fuzz --list       List the fuzz targets (crates/roomkit-fuzz).
  fuzz TARGET [--secs N]
                    Fuzz TARGET with AFL++ for N seconds (default 60): install
                    make, gcc and libc6-dev through apt when missing and run as
                    root, and cargo-afl (which builds AFL++) when missing; build
                    the target instrumented into target/afl; run afl-fuzz on its
                    seeds into target/fuzz/TARGET; report executions, exec/s,
                    corpus and crashes. Fails on a crash, printing the crash
                    file and how to replay it.
  fuzz TARGET --replay FILE...
                    Run FILEs through TARGET's harness in a normal build
                    (ROOMKIT_FUZZ_TRACE=1 prints the registry target's steps).
  help              Print this message.

A leading `--` before the ARGS of `run` and `bench` is optional.
When the CI environment variable is set and .config/nextest.toml defines
[profile.ci], nextest runs with `--profile ci`.";

/// The command behind `cargo xtask run`; the user's arguments are appended.
const RUN_COMMAND: &[&str] = &[
    "cargo",
    "run",
    "--quiet",
    "--package",
    "roomkit-server-bin",
    "--bin",
    "roomkit-server",
    "--",
    "--dev",
    "--data-dir",
    "target/roomkit-data",
];

/// The command behind `cargo xtask demo`.
const DEMO_COMMAND: &[&str] = &["cargo", "run", "--quiet", "--package", "roomkit-tests", "--example", "demo"];

/// Package name of the benchmark crate.
const BENCH_PACKAGE: &str = "roomkit-bench";

/// nextest configuration file, relative to the project root.
const NEXTEST_CONFIG: &str = ".config/nextest.toml";

/// Entry point: moves to the project root, then dispatches on the subcommand.
fn main() {
    let root = project_root();
    if let Err(err) = env::set_current_dir(root) {
        eprintln!("error: cannot change directory to {}: {err}", root.display());
        process::exit(1);
    }

    let mut args = env::args().skip(1);
    let command = args.next();
    let rest: Vec<String> = args.collect();

    let result = match command.as_deref() {
        Some("test") => test(&rest),
        Some("tidy") => tidy::check(root),
        Some("run") => run(&rest),
        Some("demo") => run_command(DEMO_COMMAND, &[]),
        Some("bench") => bench(&rest),
        Some("cluster") => cluster::main(strip_separator(&rest)),
        Some("fuzz") => fuzz::main(&rest),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => usage_error(&format!("unknown command `{other}`")),
        None => usage_error("no command given"),
    };

    if let Err(err) = result {
        eprintln!("error: {err}");
        process::exit(1);
    }
}

/// The workspace root: the parent directory of this crate's manifest dir.
fn project_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in a subdirectory of the project root")
}

/// Prints `message` and the usage text to stderr, then exits with status 2.
fn usage_error(message: &str) -> ! {
    eprintln!("error: {message}\n\n{USAGE}");
    process::exit(2);
}

/// Drops a single leading `--` from pass-through arguments, if present.
fn strip_separator(args: &[String]) -> &[String] {
    match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    }
}

/// `cargo xtask test`: the full check pipeline, or only the tests when
/// runner arguments are given after `--`.
fn test(args: &[String]) -> Result<(), String> {
    let extra: &[String] = match args.split_first() {
        None => &[],
        Some((first, rest)) if first == "--" => rest,
        Some((first, _)) => usage_error(&format!(
            "unexpected argument `{first}` for `test`; pass test-runner arguments after `--`"
        )),
    };

    let start = Instant::now();
    system::ensure(system::TEST_PACKAGES)?;
    let result = if extra.is_empty() {
        test_all()
    } else {
        run_tests(extra).map_err(|err| format!("step `tests` failed: {err}"))
    };
    eprintln!("==> total time: {:.1}s", start.elapsed().as_secs_f64());
    if result.is_ok() {
        eprintln!("==> all steps passed");
    }
    result
}

/// Runs every step of `cargo xtask test`, stopping at the first failure.
fn test_all() -> Result<(), String> {
    /// Tags an error with the name of the step that produced it.
    fn step(name: &str, result: Result<(), String>) -> Result<(), String> {
        result.map_err(|err| format!("step `{name}` failed: {err}"))
    }

    step("tidy", tidy::check(project_root()))?;
    step("toolchain", ensure_rustup_components(&["rustfmt", "clippy"]))?;
    step("fmt", cmd("cargo", &["fmt", "--all", "--", "--check"]))?;
    step("clippy", cmd("cargo", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    step("tests", run_tests(&[]))?;
    step("fuzz", fuzz_smoke())?;
    step("doc", cmd_env("cargo", &["doc", "--workspace", "--no-deps"], &[("RUSTDOCFLAGS", "-D warnings")]))?;
    Ok(())
}

/// The short fuzzing run of `cargo xtask test` (see `fuzz.rs`), unless
/// `ROOMKIT_FUZZ_SMOKE_SECS=0`.
fn fuzz_smoke() -> Result<(), String> {
    match fuzz::smoke_secs()? {
        0 => {
            eprintln!("==> fuzz smoke run skipped (ROOMKIT_FUZZ_SMOKE_SECS=0)");
            Ok(())
        }
        secs => fuzz::smoke(secs),
    }
}

/// Runs the workspace tests with `extra` appended to the runner's arguments.
///
/// Uses cargo-nextest when installed; because nextest does not run doctests,
/// they are run afterwards with `cargo test --doc`, unless `extra` is
/// non-empty (filtered runs skip doctests to keep iteration fast and because
/// nextest arguments are not necessarily valid for `cargo test`). Without
/// nextest, plain `cargo test` runs everything.
fn run_tests(extra: &[String]) -> Result<(), String> {
    if nextest_available() {
        let mut args = vec!["nextest", "run"];
        if env::var_os("CI").is_some() && nextest_has_ci_profile() {
            args.extend(["--profile", "ci"]);
        }
        args.extend(["--workspace", "--no-fail-fast"]);
        args.extend(extra.iter().map(String::as_str));
        cmd("cargo", &args)?;
        if extra.is_empty() {
            cmd("cargo", &["test", "--workspace", "--doc"])?;
        }
        Ok(())
    } else {
        eprintln!("==> cargo-nextest not found, falling back to `cargo test`");
        let mut args = vec!["test", "--workspace"];
        args.extend(extra.iter().map(String::as_str));
        cmd("cargo", &args)
    }
}

/// Whether `cargo nextest --version` runs successfully.
fn nextest_available() -> bool {
    cargo_subcommand_works("nextest")
}

/// Whether `cargo SUBCOMMAND --version` runs successfully.
fn cargo_subcommand_works(subcommand: &str) -> bool {
    Command::new("cargo")
        .args([subcommand, "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Adds the toolchain components (`rustfmt`, `clippy`) that the checks need when their cargo
/// subcommands are missing, through rustup.
fn ensure_rustup_components(components: &[&str]) -> Result<(), String> {
    let subcommand = |component: &str| if component == "rustfmt" { "fmt" } else { component }.to_owned();
    let missing: Vec<&str> =
        components.iter().copied().filter(|c| !cargo_subcommand_works(&subcommand(c))).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut args = vec!["component", "add"];
    args.extend(&missing);
    cmd("rustup", &args)
}

/// Whether the nextest config file defines a `[profile.ci]` table.
fn nextest_has_ci_profile() -> bool {
    let Ok(config) = fs::read_to_string(NEXTEST_CONFIG) else {
        return false;
    };
    config.lines().any(|line| {
        let line = line.split('#').next().unwrap_or_default().trim();
        line == "[profile.ci]" || line.starts_with("[profile.ci.")
    })
}

/// `cargo xtask run`: runs [`RUN_COMMAND`] with the user's arguments appended.
fn run(args: &[String]) -> Result<(), String> {
    system::ensure(&[system::MAKE])?;
    run_command(RUN_COMMAND, args)
}

/// Runs `command` with `args` appended.
fn run_command(command: &[&str], args: &[String]) -> Result<(), String> {
    let (program, base) = command.split_first().expect("commands are not empty");
    let mut full: Vec<&str> = base.to_vec();
    full.extend(strip_separator(args).iter().map(String::as_str));
    cmd(program, &full)
}

/// `cargo xtask bench`: installs the baseline server when missing, then runs the benchmark
/// crate in release mode.
fn bench(args: &[String]) -> Result<(), String> {
    let args = strip_separator(args);
    if args.iter().any(|arg| arg == "--cluster") {
        // The cluster scenario runs on nats-server alone: no redis baseline.
        system::ensure(&[system::NATS_SERVER])?;
    } else {
        system::ensure(system::BENCH_PACKAGES)?;
    }
    // The benchmark starts the release server binary found beside its own executable, so build
    // it first, into the same target directory (both commands see the same CARGO_TARGET_DIR).
    cmd("cargo", &["build", "--release", "--package", "roomkit-server-bin", "--bin", "roomkit-server"])?;
    let mut full = vec!["run", "--release", "--package", BENCH_PACKAGE, "--"];
    full.extend(args.iter().map(String::as_str));
    cmd("cargo", &full)
}

/// Runs `program` with `args`, inheriting stdio.
///
/// Prints a `==> program args...` header first and returns an error naming
/// the command line and its exit status if it cannot start or fails.
fn cmd(program: &str, args: &[&str]) -> Result<(), String> {
    cmd_env(program, args, &[])
}

/// Like [`cmd`], but also sets the environment variables in `envs`.
pub(crate) fn cmd_env(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let line = command_line(program, args, envs);
    eprintln!("==> {line}");
    let status = Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|err| format!("`{line}` could not be started: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{line}` failed ({status})"))
    }
}

/// Renders a command for display, quoting words that contain whitespace.
fn command_line(program: &str, args: &[&str], envs: &[(&str, &str)]) -> String {
    fn quote(word: &str) -> String {
        if word.is_empty() || word.contains(char::is_whitespace) {
            format!("'{word}'")
        } else {
            word.to_owned()
        }
    }
    envs.iter()
        .map(|(key, value)| format!("{key}={}", quote(value)))
        .chain(std::iter::once(quote(program)))
        .chain(args.iter().map(|arg| quote(arg)))
        .collect::<Vec<_>>()
        .join(" ")
}
