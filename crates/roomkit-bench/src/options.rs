//! The bench's command line: what each flag sets, and the defaults.

/// What the command line asks for.
pub(crate) struct Options {
    pub(crate) replot: bool,
    pub(crate) in_process: bool,
    /// Run the cluster scenario only.
    pub(crate) cluster: bool,
    pub(crate) cluster_nodes: Vec<usize>,
    pub(crate) cluster_senders: usize,
    pub(crate) skip_durable: bool,
    pub(crate) skip_fanout: bool,
    pub(crate) join_sizes: Vec<usize>,
    pub(crate) join_concurrency: usize,
    pub(crate) join_addresses: usize,
    pub(crate) durable_messages: usize,
    pub(crate) sizes: Vec<usize>,
    /// The fixed-rate phase's rates, messages per second (the cluster scenario's too).
    pub(crate) rates: Vec<u64>,
    /// Timed seconds of each fixed-rate round (after a warm-up second).
    pub(crate) rate_secs: u64,
    /// Rounds of the fixed-rate phase per rate and system, the systems taking turns.
    pub(crate) latency_rounds: usize,
    pub(crate) deliveries: u64,
}

/// Messages the durable-send scenario sends per row on one server: at 64 senders over half a
/// second of redb's commits, long enough that one slow fsync does not set the figure.
const DURABLE_MESSAGES: usize = 16_000;
/// The same on a cluster, where JetStream acknowledges more slowly.
const CLUSTER_DURABLE_MESSAGES: usize = 4000;

/// The options of this run, from the command line (`--help` prints them and exits).
pub(crate) fn options() -> Result<Options, String> {
    let mut o = Options {
        replot: false,
        in_process: false,
        cluster: false,
        cluster_nodes: vec![1, 3],
        cluster_senders: 16,
        skip_durable: false,
        skip_fanout: false,
        join_sizes: vec![1000, 5000, 10_000, 50_000],
        join_concurrency: 256,
        join_addresses: 16,
        durable_messages: DURABLE_MESSAGES,
        sizes: vec![100, 1000, 5000],
        rates: vec![100, 1000],
        rate_secs: 3,
        latency_rounds: 4,
        deliveries: 4_000_000,
    };
    let (mut sizes_given, mut durable_given) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--sizes" => {
                o.sizes = sizes(&value()?)?;
                sizes_given = true;
            }
            "--cluster" => o.cluster = true,
            "--cluster-nodes" => o.cluster_nodes = sizes(&value()?)?,
            "--cluster-senders" => {
                o.cluster_senders = value()?.parse().map_err(|_| "bad --cluster-senders")?
            }
            "--join-sizes" => o.join_sizes = sizes(&value()?)?,
            "--join-concurrency" => {
                o.join_concurrency = value()?.parse().map_err(|_| "bad --join-concurrency")?
            }
            "--join-addresses" => o.join_addresses = value()?.parse().map_err(|_| "bad --join-addresses")?,
            "--no-join" => o.join_sizes.clear(),
            "--no-fanout" => o.skip_fanout = true,
            "--rates" => o.rates = rates(&value()?)?,
            "--rate-secs" => o.rate_secs = value()?.parse().map_err(|_| "bad --rate-secs")?,
            "--latency-rounds" => o.latency_rounds = value()?.parse().map_err(|_| "bad --latency-rounds")?,
            "--deliveries" => o.deliveries = value()?.parse().map_err(|_| "bad --deliveries")?,
            "--durable-messages" => {
                o.durable_messages = value()?.parse().map_err(|_| "bad --durable-messages")?;
                durable_given = true;
            }
            "--no-durable" => o.skip_durable = true,
            "--replot" => o.replot = true,
            "--in-process" => o.in_process = true,
            "-h" | "--help" => {
                println!("cargo xtask bench [--sizes 100,1000,5000] [--rates 100,1000] [--rate-secs 3] [--latency-rounds 4] [--deliveries 4000000] [--join-sizes 1000,5000,10000,50000] [--join-concurrency 256] [--join-addresses 16] [--no-fanout] [--no-join] [--no-durable] [--durable-messages 16000] [--in-process] [--replot]");
                println!("cargo xtask bench --cluster [--sizes 1000] [--cluster-nodes 1,3] [--rates 100,1000] [--cluster-senders 16] [--deliveries 4000000] [--rate-secs 3] [--durable-messages 4000]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if o.cluster {
        // The cluster scenario runs instead of the join storms, the fan-out and the durable
        // sends on one server.
        o.join_sizes.clear();
        o.skip_fanout = true;
        o.skip_durable = true;
        if !sizes_given {
            o.sizes = vec![1000];
        }
        if !durable_given {
            o.durable_messages = CLUSTER_DURABLE_MESSAGES;
        }
    }
    if o.rates.contains(&0) || o.rate_secs == 0 || o.latency_rounds == 0 {
        return Err("--rates and --rate-secs must be above 0, and --latency-rounds at least 1".into());
    }
    if o.cluster
        && (o.sizes.iter().any(|&size| size < 2)
            || o.cluster_nodes.is_empty()
            || o.cluster_nodes.contains(&0)
            || o.cluster_senders == 0)
    {
        return Err("--cluster needs rooms of 2 members or more (a publisher and a receiver), and node counts and senders above 0".into());
    }
    Ok(o)
}

/// Distinct rates, in increasing order.
fn rates(list: &str) -> Result<Vec<u64>, String> {
    let mut rates: Vec<u64> = list
        .split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("bad rate `{s}`")))
        .collect::<Result<_, _>>()?;
    rates.sort_unstable();
    rates.dedup();
    Ok(rates)
}

fn sizes(list: &str) -> Result<Vec<usize>, String> {
    list.split(',').map(|s| s.trim().parse().map_err(|_| format!("bad size `{s}`"))).collect()
}
