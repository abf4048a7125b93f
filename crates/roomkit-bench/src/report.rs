//! The fan-out comparison's report: roomkit's figures beside redis's at each size, with their
//! ratio, printed as a table and written to `docs/bench/results.json` (the machine, the date,
//! the settings, the pinning, one row per size) and `docs/bench/fanout.svg` (see
//! [`crate::plot`]).

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::{generator::PAYLOAD_BYTES, Options};

/// Where the results and the plot go, relative to the workspace root.
pub(crate) const RESULTS_DIR: &str = "docs/bench";

/// One size: roomkit's row, redis's row and their ratios (roomkit ÷ redis).
pub(crate) fn compare(roomkit: Value, redis: Value) -> Value {
    let ratio = |key: &str| {
        let (a, b) = (roomkit[key].as_f64().unwrap_or(0.0), redis[key].as_f64().unwrap_or(0.0));
        if b > 0.0 {
            json!((a / b * 1000.0).round() / 1000.0)
        } else {
            Value::Null
        }
    };
    json!({
        "members": roomkit["members"],
        "ratio": {
            "fanout_deliveries_per_sec": ratio("fanout_deliveries_per_sec"),
            "fanout_deliveries_per_server_cpu_sec": ratio("fanout_deliveries_per_server_cpu_sec"),
            "latency_p50_ms": ratio("latency_p50_ms"),
            "latency_p99_ms": ratio("latency_p99_ms"),
        },
        "roomkit": roomkit,
        "redis": redis,
    })
}

fn lost(row: &Value) -> u64 {
    ["fanout_lost", "fanout_out_of_order", "latency_lost", "latency_out_of_order"]
        .iter()
        .map(|k| row[k].as_u64().unwrap_or(0))
        .sum()
}

/// CPUs busy from which a process of one CPU is reported saturated.
pub(crate) const SATURATED_CPUS: f64 = 0.9;

/// Prints the side-by-side table; returns how many texts were lost or out of order, both
/// systems together.
pub(crate) fn print_comparison(rows: &[Value], pinning: &Value, rate: u64) -> u64 {
    let where_ = if pinning["applied"] == json!(true) {
        format!("server on CPU {}, generator on CPU {}", pinning["server_cpu"], pinning["generator_cpu"])
    } else {
        format!("not pinned: {}", pinning["reason"].as_str().unwrap_or("?"))
    };
    println!("fan-out, roomkit beside redis pub/sub ({PAYLOAD_BYTES}-byte texts; {where_}):");
    println!(
        "{:>8} {:>14} {:>14} {:>7} | {:>10} {:>10} | {:>10} {:>10} {:>7} | {:>12}",
        "members",
        "roomkit del/s",
        "redis del/s",
        "ratio",
        "roomkit p50",
        "redis p50",
        "roomkit p99",
        "redis p99",
        "ratio",
        "lost rk/redis"
    );
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    for r in rows {
        let (rk, rd) = (&r["roomkit"], &r["redis"]);
        println!(
            "{:>8} {:>14.0} {:>14.0} {:>7.3} | {:>8.3}ms {:>8.3}ms | {:>8.3}ms {:>8.3}ms {:>7.3} | {:>12}",
            r["members"],
            f(&rk["fanout_deliveries_per_sec"]),
            f(&rd["fanout_deliveries_per_sec"]),
            f(&r["ratio"]["fanout_deliveries_per_sec"]),
            f(&rk["latency_p50_ms"]),
            f(&rd["latency_p50_ms"]),
            f(&rk["latency_p99_ms"]),
            f(&rd["latency_p99_ms"]),
            f(&r["ratio"]["latency_p99_ms"]),
            format!("{}/{}", lost(rk), lost(rd)),
        );
    }
    println!(
        "(latency at {rate} msg/s; ratio = roomkit ÷ redis; lost counts missing and out-of-order texts)"
    );
    // Near one CPU, a process has a backlog: the generator's is in both systems' latencies.
    let busy = |v: &Value| if f(v) >= SATURATED_CPUS { "*" } else { "" };
    let mut saturated = false;
    for r in rows {
        let (rk, rd) = (&r["roomkit"], &r["redis"]);
        let (rk_server, rd_server) = (&rk["latency_server_cpus"], &rd["latency_server_cpus"]);
        let (rk_gen, rd_gen) = (&rk["latency_generator_cpus"], &rd["latency_generator_cpus"]);
        saturated |= [rk_server, rd_server, rk_gen, rd_gen].iter().any(|v| f(v) >= SATURATED_CPUS);
        println!(
            "  {} members, CPUs busy while timed: servers {:.2}{} / {:.2}{}, generator {:.2}{} / {:.2}{} (roomkit / redis)",
            r["members"],
            f(rk_server),
            busy(rk_server),
            f(rd_server),
            busy(rd_server),
            f(rk_gen),
            busy(rk_gen),
            f(rd_gen),
            busy(rd_gen),
        );
    }
    if saturated {
        println!(
            "  (* saturated, {SATURATED_CPUS:.2} of a CPU or more: its backlog is part of the latencies)"
        );
    }
    println!();
    let lost: u64 = rows.iter().map(|r| lost(&r["roomkit"]) + lost(&r["redis"])).sum();
    if lost > 0 {
        eprintln!("error: {lost} texts lost or out of order (see the rows' *_lost and *_out_of_order)\n");
    }
    lost
}

/// Writes `results.json` and `fanout.svg` under [`RESULTS_DIR`] in the workspace; returns the
/// two paths.
pub(crate) fn write(
    rows: &[Value],
    pinning: &Value,
    o: &Options,
    redis_version: Option<String>,
) -> Result<(PathBuf, PathBuf), String> {
    let root = workspace_root();
    let dir = root.join(RESULTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let results = json!({
        "generated_by": "cargo xtask bench",
        "date": utc_now(),
        "machine": machine(),
        "roomkit": {
            "version": env!("CARGO_PKG_VERSION"),
            "commit": git_commit(&root),
            "store": "memory",
        },
        "baseline": {"server": "redis pub/sub", "version": redis_version},
        "settings": {
            "payload_bytes": PAYLOAD_BYTES,
            "sizes": o.sizes,
            "deliveries": o.deliveries,
            "rate_per_sec": o.rate,
            "rate_secs": o.rate_secs,
        },
        "pinning": pinning,
        "rows": rows,
    });
    let json_path = dir.join("results.json");
    let text = serde_json::to_string_pretty(&results).expect("serializable") + "\n";
    std::fs::write(&json_path, text).map_err(|e| format!("writing {}: {e}", json_path.display()))?;
    let svg_path = dir.join("fanout.svg");
    std::fs::write(&svg_path, crate::plot::svg(&results))
        .map_err(|e| format!("writing {}: {e}", svg_path.display()))?;
    Ok((json_path, svg_path))
}

/// The machine the bench runs on: CPUs, CPU model, kernel.
pub(crate) fn machine() -> Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
    });
    json!({
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu_model": cpu_model,
        "kernel": std::fs::read_to_string("/proc/version").map(|v| v.trim().to_owned()).ok(),
    })
}

/// Redraws `fanout.svg` from the `results.json` beside it; returns the SVG's path.
pub(crate) fn replot() -> Result<PathBuf, String> {
    let dir = workspace_root().join(RESULTS_DIR);
    let json_path = dir.join("results.json");
    let text =
        std::fs::read_to_string(&json_path).map_err(|e| format!("reading {}: {e}", json_path.display()))?;
    let results: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let svg_path = dir.join("fanout.svg");
    std::fs::write(&svg_path, crate::plot::svg(&results))
        .map_err(|e| format!("writing {}: {e}", svg_path.display()))?;
    Ok(svg_path)
}

pub(crate) fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// `git describe --always --dirty` of the workspace, if git is there.
pub(crate) fn git_commit(root: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=10"])
        .current_dir(root)
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The time now, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn ratios_are_roomkit_over_redis() {
        let row = compare(
            json!({"members": 10, "fanout_deliveries_per_sec": 1.0, "latency_p99_ms": 3.0}),
            json!({"members": 10, "fanout_deliveries_per_sec": 4.0, "latency_p99_ms": 2.0}),
        );
        assert_eq!(row["ratio"]["fanout_deliveries_per_sec"], json!(0.25));
        assert_eq!(row["ratio"]["latency_p99_ms"], json!(1.5));
        assert_eq!(row["ratio"]["latency_p50_ms"], Value::Null);
    }
}
