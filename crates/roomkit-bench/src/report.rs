//! The fan-out comparison's report: roomkit's figures beside redis's at each size, with their
//! ratio, printed as tables and written to `docs/bench/results.json` (the machine, the date,
//! the settings, the pinning, one row per size) and `docs/bench/fanout.svg` (see
//! [`crate::plot`]).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::{generator::PAYLOAD_BYTES, Options};

/// Where the results and the plot go, relative to the workspace root.
pub(crate) const RESULTS_DIR: &str = "docs/bench";

/// One size: roomkit's row, redis's row and their ratios (roomkit ÷ redis). The latency
/// ratios are per rate: each round's ratio (roomkit's round against redis's round of the same
/// number, run back to back) and their median, which is the figure to read, the rounds' spread
/// showing how far the machine moved meanwhile; and the ratio of the percentiles over all rounds.
pub(crate) fn compare(roomkit: Value, redis: Value) -> Value {
    let fanout = |key: &str| ratio(roomkit[key].as_f64(), redis[key].as_f64());
    let mut latency = Map::new();
    for (rate, rk) in roomkit["latency"].as_object().into_iter().flatten() {
        let rd = &redis["latency"][rate];
        let rounds = |key: &str| -> Vec<f64> {
            let (a, b) = (rk["rounds"].as_array(), rd["rounds"].as_array());
            a.into_iter()
                .flatten()
                .zip(b.into_iter().flatten())
                .filter_map(|(a, b)| ratio(a[key].as_f64(), b[key].as_f64()))
                .collect()
        };
        let (p50, p99) = (rounds("p50_ms"), rounds("p99_ms"));
        latency.insert(
            rate.clone(),
            json!({
                "p50_ms": median(&p50),
                "p99_ms": median(&p99),
                "p50_ms_rounds": p50,
                "p99_ms_rounds": p99,
                "p99_ms_all_rounds": ratio(rk["p99_ms"].as_f64(), rd["p99_ms"].as_f64()),
            }),
        );
    }
    json!({
        "members": roomkit["members"],
        "ratio": {
            "fanout_deliveries_per_sec": fanout("fanout_deliveries_per_sec"),
            "fanout_deliveries_per_server_cpu_sec": fanout("fanout_deliveries_per_server_cpu_sec"),
            "latency": latency,
        },
        "roomkit": roomkit,
        "redis": redis,
    })
}

/// `a ÷ b` to three decimals, when both are there and `b` is above 0.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(thousandths(a / b)),
        _ => None,
    }
}

/// The middle value (the mean of the two middle ones for an even count), if any.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some(thousandths((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0)),
    }
}

/// Rounds to three decimals.
fn thousandths(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Texts a system's row counts as lost or out of order, over the fan-out phase and every
/// fixed-rate round.
pub(crate) fn lost(row: &Value) -> u64 {
    let count = |v: &Value, keys: &[&str]| keys.iter().map(|k| v[k].as_u64().unwrap_or(0)).sum::<u64>();
    let latency: u64 = row["latency"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, figures)| count(figures, &["lost", "out_of_order"]))
        .sum();
    count(row, &["fanout_lost", "fanout_out_of_order"]) + latency
}

/// CPUs busy from which a process of one CPU is reported saturated.
pub(crate) const SATURATED_CPUS: f64 = 0.9;

/// Prints the side-by-side tables, fan-out then latency; returns how many texts were lost or
/// out of order, both systems together.
pub(crate) fn print_comparison(rows: &[Value], pinning: &Value, o: &Options) -> u64 {
    let where_ = if pinning["applied"] == json!(true) {
        format!("server on CPU {}, generator on CPU {}", pinning["server_cpu"], pinning["generator_cpu"])
    } else {
        format!("not pinned: {}", pinning["reason"].as_str().unwrap_or("?"))
    };
    println!("fan-out, roomkit beside redis pub/sub ({PAYLOAD_BYTES}-byte texts; {where_}):");
    println!(
        "{:>8} {:>14} {:>14} {:>7} | {:>12}",
        "members", "roomkit del/s", "redis del/s", "ratio", "lost rk/redis"
    );
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    for r in rows {
        let (rk, rd) = (&r["roomkit"], &r["redis"]);
        println!(
            "{:>8} {:>14.0} {:>14.0} {:>7.3} | {:>12}",
            f(&r["members"]),
            f(&rk["fanout_deliveries_per_sec"]),
            f(&rd["fanout_deliveries_per_sec"]),
            f(&r["ratio"]["fanout_deliveries_per_sec"]),
            format!("{}/{}", lost(rk), lost(rd)),
        );
    }
    println!();
    println!(
        "latency, {} rounds of {} s per rate and system, the two taking turns (p50/p99 over all rounds):",
        o.latency_rounds, o.rate_secs
    );
    println!(
        "{:>8} {:>6} | {:>10} {:>10} | {:>10} {:>10} | {:>7} {:>22} | {:>25} | {:>15}",
        "members",
        "msg/s",
        "roomkit p50",
        "redis p50",
        "roomkit p99",
        "redis p99",
        "ratio",
        "p99 ratio per round",
        "CPUs busy: servers / gen.",
        "gen. waits/msg"
    );
    // Near one CPU, a process has a backlog: the generator's is in both systems' latencies.
    let busy = |v: &Value| format!("{:.2}{}", f(v), if f(v) >= SATURATED_CPUS { "*" } else { "" });
    let mut saturated = false;
    for r in rows {
        for rate in &o.rates {
            let rate = rate.to_string();
            let (rk, rd, ratio) = (
                &r["roomkit"]["latency"][&rate],
                &r["redis"]["latency"][&rate],
                &r["ratio"]["latency"][&rate],
            );
            let cpus = [
                &rk["busy_server_cpus"],
                &rd["busy_server_cpus"],
                &rk["busy_generator_cpus"],
                &rd["busy_generator_cpus"],
            ];
            saturated |= cpus.iter().any(|v| f(v) >= SATURATED_CPUS);
            let per_round: Vec<String> = ratio["p99_ms_rounds"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| format!("{:.2}", f(v)))
                .collect();
            println!(
                "{:>8} {:>6} | {:>8.3}ms {:>8.3}ms | {:>8.3}ms {:>8.3}ms | {:>7.3} {:>22} | {:>25} | {:>15}",
                f(&r["members"]),
                rate,
                f(&rk["p50_ms"]),
                f(&rd["p50_ms"]),
                f(&rk["p99_ms"]),
                f(&rd["p99_ms"]),
                f(&ratio["p99_ms"]),
                per_round.join(" "),
                format!("{} {} / {} {}", busy(cpus[0]), busy(cpus[1]), busy(cpus[2]), busy(cpus[3])),
                format!(
                    "{:.1} {:.1}",
                    f(&rk["generator_waits_per_message"]),
                    f(&rd["generator_waits_per_message"])
                ),
            );
        }
    }
    println!(
        "(ratio = roomkit ÷ redis, for the p99: the median of the rounds' ratios; CPUs and the generator's waits for input per message, roomkit then redis)"
    );
    if saturated {
        println!(
            "(* saturated, {SATURATED_CPUS:.2} of a CPU or more over the timed part: its backlog is part of the latencies)"
        );
    }
    println!();
    let lost: u64 = rows.iter().map(|r| lost(&r["roomkit"]) + lost(&r["redis"])).sum();
    if lost > 0 {
        eprintln!("error: {lost} texts lost or out of order (see the rows' fan-out and latency lost and out_of_order)\n");
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
            "rates_per_sec": o.rates,
            "rate_secs": o.rate_secs,
            "latency_rounds": o.latency_rounds,
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
    fn ratios_are_roomkit_over_redis_and_the_latencys_the_median_of_its_rounds() {
        let rounds =
            |p99: &[f64]| p99.iter().map(|p| json!({"p50_ms": 1.0, "p99_ms": p})).collect::<Vec<_>>();
        let row = compare(
            json!({"members": 10, "fanout_deliveries_per_sec": 1.0,
                   "latency": {"100": {"p99_ms": 9.0, "rounds": rounds(&[3.0, 8.0, 4.0])}}}),
            json!({"members": 10, "fanout_deliveries_per_sec": 4.0,
                   "latency": {"100": {"p99_ms": 4.0, "rounds": rounds(&[2.0, 2.0, 4.0])}}}),
        );
        assert_eq!(row["ratio"]["fanout_deliveries_per_sec"], json!(0.25));
        assert_eq!(row["ratio"]["fanout_deliveries_per_server_cpu_sec"], Value::Null);
        let latency = &row["ratio"]["latency"]["100"];
        assert_eq!(latency["p99_ms_rounds"], json!([1.5, 4.0, 1.0]));
        assert_eq!(latency["p99_ms"], json!(1.5));
        assert_eq!(latency["p99_ms_all_rounds"], json!(2.25));
        assert_eq!(latency["p50_ms"], json!(1.0));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn losses_count_the_fanout_and_every_rate() {
        let row = json!({"fanout_lost": 1, "fanout_out_of_order": 2,
                         "latency": {"100": {"lost": 3, "out_of_order": 0}, "1000": {"lost": 0, "out_of_order": 4}}});
        assert_eq!(lost(&row), 10);
    }
}
