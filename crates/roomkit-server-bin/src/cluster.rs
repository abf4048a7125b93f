//! Cluster mode flags (`--cluster`, `--node-id`, ...) and joining the cluster at startup:
//! the node's connection to NATS for leases and room streams, and the JetStream store every
//! node shares. A wrong or unreachable NATS address stops the start with a clear message.

use std::{sync::Arc, time::Duration};

use clap::Args;
use roomkit_core::store::{MessageStore, Retention};
use roomkit_server::cluster::{Cluster, ClusterConfig};
use roomkit_store_nats::{NatsStore, NatsStoreConfig};
use serde::Deserialize;

/// How this server joins a cluster; without `--cluster` it runs alone.
#[derive(Debug, Args, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ClusterArgs {
    /// Run as a node of a cluster on these NATS servers (with JetStream): `nats://HOST:PORT`,
    /// several comma-separated. Rooms and history are then kept in JetStream (replacing
    /// `--store`); every node accepts any client.
    #[arg(long = "cluster", env = "ROOMKIT_CLUSTER", value_delimiter = ',')]
    pub nats: Option<Vec<String>>,
    /// This node's name in the cluster: unique, stable across restarts (letters, digits,
    /// `-`, `_`). Required with --cluster.
    #[arg(long, env = "ROOMKIT_NODE_ID")]
    pub node_id: Option<String>,
    /// A room's lease (and a node's announcement) expires this long after its last renewal:
    /// a dead node's rooms move after about this long [default: 6].
    #[arg(long, env = "ROOMKIT_LEASE_TTL_SECS")]
    pub lease_ttl_secs: Option<u64>,
    /// How long a request may wait for its room's node before it is answered
    /// ROOM_UNAVAILABLE [default: 15].
    #[arg(long, env = "ROOMKIT_FORWARD_TIMEOUT_SECS")]
    pub forward_timeout_secs: Option<u64>,
    /// How many NATS servers keep each message, room and lease: 1, or 3 on a three-server
    /// NATS cluster [default: 1].
    #[arg(long, env = "ROOMKIT_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,
    /// Prefix of the cluster's subjects, buckets and stream: clusters with different
    /// prefixes share a NATS without seeing each other [default: roomkit].
    #[arg(long, env = "ROOMKIT_CLUSTER_PREFIX")]
    pub cluster_prefix: Option<String>,
}

impl ClusterArgs {
    /// Flags over the file's `[cluster]` table.
    pub fn merge(flags: &ClusterArgs, file: &ClusterArgs) -> ClusterArgs {
        ClusterArgs {
            nats: flags.nats.clone().or_else(|| file.nats.clone()),
            node_id: flags.node_id.clone().or_else(|| file.node_id.clone()),
            lease_ttl_secs: flags.lease_ttl_secs.or(file.lease_ttl_secs),
            forward_timeout_secs: flags.forward_timeout_secs.or(file.forward_timeout_secs),
            nats_replicas: flags.nats_replicas.or(file.nats_replicas),
            cluster_prefix: flags.cluster_prefix.clone().or_else(|| file.cluster_prefix.clone()),
        }
    }

    /// The cluster settings, or `None` without `--cluster`.
    pub fn resolve(self) -> Result<Option<ClusterSettings>, String> {
        let Some(urls) = self.nats.filter(|u| !u.is_empty()) else {
            if self.node_id.is_some() {
                return Err("--node-id needs --cluster (the NATS servers to join)".into());
            }
            return Ok(None);
        };
        let node_id = self.node_id.ok_or("--cluster needs --node-id (this node's name in the cluster)")?;
        let mut config = ClusterConfig::new(urls, node_id);
        if let Some(secs) = self.lease_ttl_secs {
            config.lease_ttl = Duration::from_secs(secs);
        }
        if let Some(secs) = self.forward_timeout_secs {
            config.forward_timeout = Duration::from_secs(secs);
        }
        if let Some(prefix) = self.cluster_prefix {
            config.prefix = prefix;
        }
        config.replicas = self.nats_replicas.unwrap_or(1);
        Ok(Some(ClusterSettings { config }))
    }
}

/// Cluster mode, resolved.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub config: ClusterConfig,
}

/// Joins the cluster and opens the shared store.
pub async fn join(
    settings: &ClusterSettings,
    retention: Retention,
) -> Result<(Cluster, Arc<dyn MessageStore>), String> {
    let config = settings.config.clone();
    let store_config = NatsStoreConfig {
        urls: config.urls.clone(),
        name_prefix: config.prefix.clone(),
        replicas: config.replicas,
        retention,
        connect_timeout: config.connect_timeout,
        ..NatsStoreConfig::default()
    };
    let cluster = Cluster::connect(config).await.map_err(|e| format!("could not join the cluster: {e}"))?;
    let store = NatsStore::connect(store_config)
        .await
        .map_err(|e| format!("could not open the cluster's JetStream store: {e}"))?;
    tracing::info!(stream = store.stream_name(), "cluster store opened");
    Ok((cluster, Arc::new(store)))
}
