//! The JetStream store against the store conformance suite: on one nats-server per case, and
//! on a three-server cluster with three replicas, which also outlives the loss of one server.

mod common;

use async_trait::async_trait;
use common::{config, connect_blocking};
use roomkit_core::store::{
    HistoryPage, HistoryQuery, HistoryRange, MessageStore, Retention, RoomRecord, StoreError, StoreOp,
};
use roomkit_protocol::RoomUuid;
use roomkit_store_nats::{
    testing::{NatsCluster, NatsServer},
    NatsStore, NatsStoreConfig,
};

/// A store with the server it runs on, which lives as long as the store.
struct Served {
    store: NatsStore,
    _server: NatsServer,
}

#[async_trait]
impl MessageStore for Served {
    async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.store.apply(now, ops).await
    }

    async fn history(
        &self,
        room: &RoomUuid,
        query: &HistoryQuery,
        now: u64,
    ) -> Result<HistoryPage, StoreError> {
        self.store.history(room, query, now).await
    }

    async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        self.store.rooms().await
    }
}

/// A fresh server, and a store on it.
fn open(retention: Retention) -> Served {
    let server = NatsServer::start();
    let store = connect_blocking(config(vec![server.url()], retention));
    Served { store, _server: server }
}

roomkit_core::store_conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    open
);

/// Every case of the suite on one three-server cluster (starting a cluster per case would
/// take too long), replicated three times. The cases share the stream and the bucket (creating
/// replicated ones per case costs about a second each): each case starts with both purged and
/// a new store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_a_three_server_cluster_with_three_replicas() {
    use roomkit_core::conformance::store as case;

    let cluster = NatsCluster::start(3);
    let open = || {
        let urls = cluster.urls();
        move |retention| {
            let config = NatsStoreConfig { replicas: 3, ..config(urls, retention) };
            let store = connect_blocking(config);
            tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(purge(&store)));
            connect_blocking(store.config().clone())
        }
    };
    case::history_by_time_and_order(open()).await;
    case::history_by_sequence(open()).await;
    case::history_shows_only_what_the_viewer_may_see(open()).await;
    case::rooms_are_kept_changed_and_deleted(open()).await;
    case::retention_by_count(open()).await;
    case::retention_by_age(open()).await;
    case::retention_across_many_commits(open()).await;
    case::a_replaced_message_counts_once(open()).await;
    case::a_room_ended_and_created_again_starts_afresh(open()).await;
    case::rooms_do_not_mix(open()).await;
}

/// Empties the store's stream and bucket.
async fn purge(store: &NatsStore) {
    let client = async_nats::connect(store.config().urls.clone()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    for name in [store.stream_name().to_owned(), format!("KV_{}", store.bucket_name())] {
        js.get_stream(&name).await.expect("the stream").purge().await.expect("purge");
    }
}

/// With three replicas, killing one server of three loses nothing: commits succeed again once
/// the client has moved to another server (and the stream has a leader), and a server started
/// again catches up, so a store talking only to it reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_store_outlives_one_server_of_three() {
    use roomkit_core::conformance::store::{message, record};

    let mut cluster = NatsCluster::start(3);
    let config = |urls| NatsStoreConfig { replicas: 3, ..config(urls, Retention::default()) };
    let store = common::connect(config(cluster.urls())).await;
    let mut ops = vec![StoreOp::PutRoom(record("r"))];
    ops.extend(common::appends("r", [message(1, 1, "a", None)]));
    store.apply(10, &ops).await.expect("apply");

    cluster.kill(0);
    let two = common::appends("r", [message(2, 2, "a", None)]);
    until_ok("a commit with one server down", || store.apply(20, &two)).await;
    cluster.restart(0);
    let only_the_restarted = NatsStoreConfig { urls: vec![cluster.urls()[0].clone()], ..config(vec![]) };
    let reader =
        until_ok("a store on the restarted server", || NatsStore::connect(only_the_restarted.clone())).await;
    until_ok("the restarted server caught up", || async {
        let query = HistoryQuery { viewer: None, range: HistoryRange::AfterSeq(0), limit: 10 };
        let page = reader.history(&common::room("r"), &query, 30).await.map_err(|e| e.to_string())?;
        let rooms = reader.rooms().await.map_err(|e| e.to_string())?;
        match (common::seqs(&page) == [1, 2], rooms == [(record("r"), 2)]) {
            (true, true) => Ok(()),
            _ => Err(format!("{:?} and {rooms:?}", common::seqs(&page))),
        }
    })
    .await;
}

/// Runs `attempt` until it succeeds, for 60 seconds at most (a bound on hangs only).
async fn until_ok<T, F, Fut, E>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match attempt().await {
            Ok(done) => return done,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("{what}: not yet ({e})");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what}: still failing after 60 s: {e}"),
        }
    }
}
