//! What a message costs the store when each commit carries k messages spread over 8
//! chatrooms (default k = 1, 4, 16, 64, 256, 1024): the time per message of 40,000 messages
//! (at least 20 commits) after 8,000 to warm up, without waiting for the disk (`Eventual`, the
//! database's own work) and with the journal's fsync per commit (`Immediate`, what an
//! acknowledgement waits for). A group commit's size is what the server's load makes it; this
//! shows what each size costs. Run it in release mode on a quiet machine:
//!
//! `cargo run --release -p roomkit-store-redb --example group_cost [k...]`

use std::time::Instant;

mod support;

use roomkit_core::store::{MessageStore, Retention, StoreOp};
use roomkit_store_redb::{Durability, RedbConfig, RedbStore};

const ROOMS: u64 = 8;

fn message(n: u64) -> StoreOp {
    support::text(&format!("room-{}", n % ROOMS), n, n / ROOMS + 1, &"x".repeat(100))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sizes: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![1, 4, 16, 64, 256, 1024] } else { sizes };
    println!("k       eventual µs/msg   immediate µs/msg");
    for k in sizes {
        let mut row = Vec::new();
        for durability in [Durability::Eventual, Durability::Immediate] {
            let dir = std::env::temp_dir().join(format!("roomkit-group-cost-{}-{k}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let retention = Retention { max_messages: Some(100_000), max_age_ms: Some(30 * 86_400_000) };
            let store = RedbStore::open(&dir, RedbConfig { retention, durability, ..RedbConfig::default() })
                .expect("open");
            let total = 40_000u64.max(k * 20);
            let mut seq = 0;
            // Warm up: the tables' first pages, the journal's file.
            while seq < 8_000 {
                let ops: Vec<StoreOp> = (seq..seq + k).map(message).collect();
                store.apply(1_700_000_000_000 + seq, &ops).await.expect("apply");
                seq += k;
            }
            let started = Instant::now();
            let (first, end) = (seq, seq + total);
            while seq < end {
                let ops: Vec<StoreOp> = (seq..seq + k).map(message).collect();
                store.apply(1_700_000_000_000 + seq, &ops).await.expect("apply");
                seq += k;
            }
            row.push(started.elapsed().as_secs_f64() * 1e6 / (seq - first) as f64);
            drop(store);
            let _ = std::fs::remove_dir_all(&dir);
        }
        println!("{k:<7} {:>12.2}      {:>12.2}", row[0], row[1]);
    }
}
