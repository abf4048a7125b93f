//! The cluster scenario's report (see `cluster.rs`): a table, one line per node count and
//! room size, and `docs/bench/cluster.json` (the machine and its load average when the run
//! began, the date, roomkit's commit, the nats-server version, the settings, the pinning, the
//! rows). The fan-out comparison's `results.json` and `fanout.svg` are left alone.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::{
    cluster::nats_version,
    generator::PAYLOAD_BYTES,
    report::{git_commit, machine, utc_now, workspace_root, RESULTS_DIR, SATURATED_CPUS},
    Options,
};

/// Texts lost or out of order in a row, over every phase.
fn lost(row: &Value) -> u64 {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let latency: u64 = row["latency"]
        .as_array()
        .map_or(0, |phases| phases.iter().map(|p| n(&p["lost"]) + n(&p["out_of_order"])).sum());
    n(&row["fanout_lost"]) + n(&row["fanout_out_of_order"]) + latency
}

/// Prints the table; returns how many texts were lost or out of order, every row together.
pub(crate) fn print_table(rows: &[Value], pinning: &Value, o: &Options) -> u64 {
    let where_ = if pinning["applied"] == json!(true) {
        format!(
            "nats-server and the nodes on CPU {}, generator on CPU {}",
            pinning["server_cpu"], pinning["generator_cpu"]
        )
    } else {
        format!("not pinned: {}", pinning["reason"].as_str().unwrap_or("?"))
    };
    println!("cluster fan-out ({PAYLOAD_BYTES}-byte texts, JetStream store; {where_}):");
    let mut head = format!("{:>5} {:>8} {:>13}", "nodes", "members", "deliveries/s");
    for rate in &o.rates {
        head += &format!(" {:>13}", format!("p99 @{rate}/s"));
    }
    head += &format!(
        " {:>34} {:>9} {:>9} {:>11} | {:>8} {:>10} {:>6}",
        "CPU µs per delivery, each node", "all nodes", "NATS CPU", "NATS in/out", "acks/s", "ack p99", "lost"
    );
    println!("{head}");
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    for r in rows {
        let mut line = format!(
            "{:>5} {:>8} {:>13.0}",
            n(&r["nodes"]),
            n(&r["members"]),
            f(&r["fanout_deliveries_per_sec"])
        );
        for rate in &o.rates {
            let phase = r["latency"]
                .as_array()
                .and_then(|phases| phases.iter().find(|p| p["rate_per_sec"] == json!(rate)));
            // Starred where the generator was saturated: its backlog is in the latency.
            let busy = phase.is_some_and(|p| f(&p["generator_cpus"]) >= SATURATED_CPUS);
            line += &format!(
                " {:>10.3}ms{}",
                phase.map_or(0.0, |p| f(&p["p99_ms"])),
                if busy { "*" } else { " " }
            );
        }
        let per_node: Vec<String> = r["per_node"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|n| {
                        format!("{} {:.3}", n["node"].as_str().unwrap_or("?"), f(&n["cpu_us_per_delivery"]))
                    })
                    .collect()
            })
            .unwrap_or_default();
        line += &format!(
            " {:>34} {:>9.3} {:>7.1}µs {:>11} | {:>8.0} {:>8.3}ms {:>6}",
            per_node.join("  "),
            f(&r["nodes_cpu_us_per_delivery"]),
            f(&r["nats_cpu_us_per_message"]),
            format!("{:.1}/{:.1}", f(&r["nats_in_msgs_per_message"]), f(&r["nats_out_msgs_per_message"])),
            f(&r["durable"]["acks_per_sec"]),
            f(&r["durable"]["ack_p99_ms"]),
            lost(r),
        );
        println!("{line}");
    }
    println!(
        "(node 1 owns the room, stores each message in JetStream and publishes it once; every node delivers to its own \
         members; NATS CPU and NATS in/out: nats-server's CPU time and the messages it received and sent, per text sent; \
         acks/s: {} senders spread over the nodes; * after a p99: the generator was saturated, {SATURATED_CPUS:.2} of \
         a CPU or more, and its backlog is part of that latency)\n",
        o.cluster_senders
    );
    let lost: u64 = rows.iter().map(lost).sum();
    if lost > 0 {
        eprintln!("error: {lost} texts lost or out of order (see the rows' fanout_* and latency fields)\n");
    }
    lost
}

/// Writes `docs/bench/cluster.json`; returns its path.
pub(crate) fn write(
    rows: &[Value],
    pinning: &Value,
    o: &Options,
    load_before: Option<String>,
) -> Result<PathBuf, String> {
    let root = workspace_root();
    let dir = root.join(RESULTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut machine = machine();
    machine["loadavg_at_start"] = json!(load_before);
    let results = json!({
        "generated_by": "cargo xtask bench --cluster",
        "date": utc_now(),
        "machine": machine,
        "roomkit": {
            "version": env!("CARGO_PKG_VERSION"),
            "commit": git_commit(&root),
            "store": "jetstream",
        },
        "nats_server": nats_version(),
        "settings": {
            "payload_bytes": PAYLOAD_BYTES,
            "nodes": o.cluster_nodes,
            "sizes": o.sizes,
            "deliveries": o.deliveries,
            "rates_per_sec": o.rates,
            "rate_secs": o.rate_secs,
            "durable_senders": o.cluster_senders,
            "durable_messages": o.durable_messages,
        },
        "pinning": pinning,
        "rows": rows,
    });
    let path = dir.join("cluster.json");
    let text = serde_json::to_string_pretty(&results).expect("serializable") + "\n";
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}
