//! The JetStream store against the store conformance suite: on one nats-server per case, and
//! on a three-server cluster with three replicas.

mod common;

use async_trait::async_trait;
use common::{config, connect_blocking};
use roomkit_core::store::{
    HistoryPage, HistoryQuery, MessageStore, Retention, RoomRecord, StoreError, StoreOp,
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
