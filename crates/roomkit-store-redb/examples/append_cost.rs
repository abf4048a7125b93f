//! What one append costs as a chatroom's history grows, and what a message takes on disk.
//!
//! For each history length H (default 0, 10 000 and 100 000): a fresh store keeping 100 000
//! messages per chatroom (the binary's default) is filled with H messages, then the time of
//! single-message commits is measured — without waiting for the disk (`Eventual`, the store's
//! own work) and with an fsync each (`Immediate`, what a lone send waits for). Then the file
//! size per stored message, for 100-byte texts, 5 000-byte texts and 5 000-byte texts of
//! control characters. Run it in release mode on a quiet machine:
//!
//! `cargo run --release -p roomkit-store-redb --example append_cost [H...]`

use std::time::Instant;

mod support;

use roomkit_core::store::{MessageStore, Retention, StoreOp};
use roomkit_store_redb::{Durability, RedbConfig, RedbStore};

const RETENTION: u64 = 100_000;

fn message(seq: u64, text: &str) -> StoreOp {
    support::text("room", seq, seq, text)
}

fn open(dir: &std::path::Path, durability: Durability) -> RedbStore {
    let retention = Retention { max_messages: Some(RETENTION), max_age_ms: None };
    RedbStore::open(dir, RedbConfig { retention, durability, ..RedbConfig::default() }).expect("open")
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("roomkit-append-cost-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

async fn fill(store: &RedbStore, from: u64, n: u64, text: &str) {
    let mut seq = from;
    while seq < from + n {
        let ops: Vec<StoreOp> = (seq..(seq + 1000).min(from + n)).map(|s| message(s, text)).collect();
        store.apply(0, &ops).await.expect("apply");
        seq += ops.len() as u64;
    }
}

/// Mean time of `n` single-message commits after `next - 1` stored messages, in µs.
async fn per_append(store: &RedbStore, next: u64, n: u64, text: &str) -> f64 {
    let started = Instant::now();
    for seq in next..next + n {
        store.apply(0, &[message(seq, text)]).await.expect("apply");
    }
    started.elapsed().as_secs_f64() * 1e6 / n as f64
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let sizes: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![0, 10_000, 100_000] } else { sizes };
    let text = "x".repeat(100);
    println!("history   append (no fsync)   append (fsync)");
    for h in sizes {
        let dir = scratch(&format!("h{h}"));
        let store = open(&dir, Durability::Eventual);
        fill(&store, 1, h, &text).await;
        let eventual = per_append(&store, h + 1, 2_000, &text).await;
        drop(store);
        let store = open(&dir, Durability::Immediate);
        let immediate = per_append(&store, h + 2_001, 200, &text).await;
        println!("{h:>7}   {eventual:>12.1} µs   {immediate:>11.1} µs");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!();
    println!("text                         bytes on disk per message");
    let control: String = (0..5_000).map(|i| char::from(1 + (i % 30) as u8)).collect();
    for (name, text) in
        [("100 bytes", "y".repeat(100)), ("5000 bytes", "z".repeat(5_000)), ("5000 control chars", control)]
    {
        let dir = scratch("disk");
        let store = open(&dir, Durability::Immediate);
        fill(&store, 1, 2_000, &text).await;
        let bytes = std::fs::metadata(store.path()).expect("file").len();
        println!("{name:<28} {:>8.0}", bytes as f64 / 2_000.0);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
