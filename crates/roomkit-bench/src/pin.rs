//! Pinning the server under test and the generator to different CPUs, so that the two do not
//! take turns on one core and the figures compare servers, not schedulers.
//!
//! The fan-out comparison pins the server it starts (roomkit-server or redis-server) to the
//! first CPU this process may use and the generator itself, every thread of it, to the second,
//! when there are at least two. Both go through `taskset` from util-linux: the server is started
//! as `taskset -c <cpu> <server> …` (taskset sets the affinity and then execs the server, so the
//! child's pid is the server's), and the generator runs `taskset -a -p -c <cpu> <own pid>`,
//! which covers the runtime's threads already started; threads started later inherit their
//! creator's affinity. `sched_setaffinity` through `libc` would need `unsafe`, which the
//! workspace forbids, and no crate in Cargo.lock wraps it. Whether pinning took effect is read
//! back from `Cpus_allowed_list` in `/proc/<pid>/status` and reported with the results.

use std::process::{Command, Stdio};

/// Which CPU the server and the generator run on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pinning {
    pub(crate) server_cpu: usize,
    pub(crate) generator_cpu: usize,
}

/// The outcome of trying to pin the generator: the CPUs to restore afterwards, and either the
/// pinning in effect or why there is none.
pub(crate) struct Plan {
    original: Option<String>,
    pub(crate) pinning: Result<Pinning, String>,
}

impl Plan {
    /// The pinning in effect, if any.
    pub(crate) fn pinning(&self) -> Option<Pinning> {
        self.pinning.as_ref().ok().copied()
    }

    /// Gives the generator back the CPUs it had before [`pin_generator`].
    pub(crate) fn restore(&self) {
        if let (Ok(_), Some(original)) = (&self.pinning, &self.original) {
            let _ = taskset_pid(original, std::process::id());
        }
    }

    /// How the results describe it.
    pub(crate) fn describe(&self) -> serde_json::Value {
        match &self.pinning {
            Ok(p) => serde_json::json!({
                "applied": true,
                "method": "taskset",
                "server_cpu": p.server_cpu,
                "generator_cpu": p.generator_cpu,
            }),
            Err(reason) => serde_json::json!({"applied": false, "reason": reason}),
        }
    }
}

/// Pins this process to the second CPU it may use, leaving the first for the servers it
/// starts, when it may use two or more and `taskset` is installed.
pub(crate) fn pin_generator() -> Plan {
    let original = allowed_cpus("self");
    let pinning = (|| {
        let list = original.as_deref().ok_or("cannot read this process's allowed CPUs")?;
        let cpus = parse_cpu_list(list).ok_or_else(|| format!("cannot parse the CPU list `{list}`"))?;
        let [server_cpu, generator_cpu, ..] = cpus[..] else {
            return Err(format!("only one CPU available ({list})"));
        };
        taskset_pid(&generator_cpu.to_string(), std::process::id())?;
        let now = allowed_cpus("self").unwrap_or_default();
        if now != generator_cpu.to_string() {
            return Err(format!("taskset ran but this process may still use CPUs {now}"));
        }
        Ok(Pinning { server_cpu, generator_cpu })
    })();
    Plan { original, pinning }
}

/// The CPUs this process may use, in order (empty if they cannot be read).
pub(crate) fn usable_cpus() -> Vec<usize> {
    allowed_cpus("self").and_then(|list| parse_cpu_list(&list)).unwrap_or_default()
}

/// Pins the calling thread (not the whole process) to `cpus`; threads it starts afterwards
/// inherit the affinity.
pub(crate) fn pin_this_thread(cpus: &[usize]) -> Result<(), String> {
    let me =
        std::fs::read_link("/proc/thread-self").map_err(|e| format!("cannot find this thread's id: {e}"))?;
    let tid = me.file_name().and_then(|t| t.to_str()).ok_or("cannot read this thread's id")?.to_owned();
    let list = cpus.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    taskset(&["-p", "-c", &list, &tid])
}

/// `program`, to be started on `cpu` when given.
pub(crate) fn command(program: &std::path::Path, cpu: Option<usize>) -> tokio::process::Command {
    tokio::process::Command::from(std_command(program, cpu))
}

/// [`command`] for `std::process`.
pub(crate) fn std_command(program: &std::path::Path, cpu: Option<usize>) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

/// The `Cpus_allowed_list` of a process (`self` or a pid), such as `0-1` or `0,2`.
pub(crate) fn allowed_cpus(pid: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).map(|v| v.trim().to_owned())
}

/// Sets the affinity of every thread of `pid` to the CPUs in `list`.
fn taskset_pid(list: &str, pid: u32) -> Result<(), String> {
    taskset(&["-a", "-p", "-c", list, &pid.to_string()])
}

/// Runs `taskset` with `args`.
fn taskset(args: &[&str]) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("taskset (util-linux) could not be started: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("taskset {} failed ({status})", args.join(" ")))
    }
}

/// The CPUs of a list such as `0-3,6`, in order.
fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list("x"), None);
    }
}
