//! System packages that the checks need and Cargo cannot provide (a browser for the web
//! page's test, the NATS server the JetStream store's tests start, the server the bench
//! compares against), installed through apt when missing.
//!
//! A newcomer runs `cargo xtask test` on a fresh machine and it must pass: so the command
//! installs what is missing itself when it runs as root on a Debian-like system, and
//! otherwise stops before building anything, printing the one command that installs it.

use std::{fs, path::Path, process::Command};

/// A Debian package, the file whose presence shows it is installed, and why it is needed.
pub(crate) struct SystemPackage {
    /// The package name given to apt.
    pub(crate) name: &'static str,
    /// A file the package installs; its absence means the package is missing.
    pub(crate) provides: &'static str,
    /// Which check needs it, for the message shown before installing.
    pub(crate) needed_by: &'static str,
}

/// What `cargo xtask test` needs.
pub(crate) const TEST_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        name: "chromium",
        provides: "/usr/bin/chromium",
        needed_by: "the web page's browser test (headless Chromium)",
    },
    SystemPackage {
        name: "chromium-driver",
        provides: "/usr/bin/chromedriver",
        needed_by: "the web page's browser test (WebDriver)",
    },
    NATS_SERVER,
    MAKE,
];

/// `make`, which building jemalloc (the server binary's allocator) runs, like AFL++'s build.
pub(crate) const MAKE: SystemPackage = SystemPackage {
    name: "make",
    provides: "/usr/bin/make",
    needed_by: "building jemalloc, the server's allocator (and AFL++ for the fuzz smoke)",
};

/// The NATS server (with JetStream) that the JetStream store's tests start, and the cluster
/// mode runs on.
pub(crate) const NATS_SERVER: SystemPackage = SystemPackage {
    name: "nats-server",
    provides: "/usr/sbin/nats-server",
    needed_by: "the JetStream store's tests (roomkit-store-nats starts nats-server)",
};

/// What `cargo xtask bench` needs.
pub(crate) const BENCH_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        name: "redis-server",
        provides: "/usr/bin/redis-server",
        needed_by: "the bench's baseline (redis pub/sub, run beside roomkit's fan-out)",
    },
    NATS_SERVER,
    MAKE,
];

/// Makes sure every package in `packages` is installed: installs the missing ones with apt
/// when running as root, or fails with the command that would install them.
pub(crate) fn ensure(packages: &[SystemPackage]) -> Result<(), String> {
    let missing: Vec<&SystemPackage> = packages.iter().filter(|p| !Path::new(p.provides).exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let install = format!("apt-get install -y --no-install-recommends {}", names.join(" "));
    for package in &missing {
        eprintln!(
            "==> {} is missing ({} not found); needed by {}",
            package.name, package.provides, package.needed_by
        );
    }
    if !is_root() || !Path::new("/usr/bin/apt-get").exists() {
        return Err(format!(
            "missing system packages: {}. Install them, then run this command again:\n\n    sudo apt-get update && sudo {install}\n",
            names.join(", ")
        ));
    }
    let noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    crate::cmd_env("apt-get", &["update", "-q"], &noninteractive)?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&names);
    crate::cmd_env("apt-get", &args, &noninteractive)?;
    match missing.iter().find(|p| !Path::new(p.provides).exists()) {
        Some(package) => {
            Err(format!("{} was installed but {} is still missing", package.name, package.provides))
        }
        None => Ok(()),
    }
}

/// Whether this process runs as root: the owner of `/proc/self` is the process's user.
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata("/proc/self") {
        Ok(meta) => meta.uid() == 0,
        Err(_) => Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_packages_need_nothing() {
        let here = SystemPackage { name: "none", provides: "/", needed_by: "this test" };
        assert_eq!(ensure(&[here]), Ok(()));
    }
}
