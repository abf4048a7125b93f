//! Without the `cluster` feature: the cluster node cannot exist, and a server is always a
//! single node. The same names as `cluster/`, so that the callers need no `cfg`.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use roomkit_core::{store::MessageStore, ConnId, Identity, Output};
use roomkit_protocol::{ops::Request, RoomUuid};
use tokio::task::AbortHandle;

use crate::{outbox::Outbox, shard::Shard, ServerShared};

/// A cluster node: never constructed without the `cluster` feature.
pub(crate) enum Node {}

impl Node {
    pub(crate) fn slot(&self) -> u16 {
        match *self {}
    }

    pub(crate) fn attach(
        self: &Arc<Self>,
        _: Vec<Shard>,
        _: Weak<ServerShared>,
        _: Arc<dyn MessageStore>,
    ) -> Vec<AbortHandle> {
        match **self {}
    }

    pub(crate) async fn route(
        self: &Arc<Self>,
        _: ConnId,
        _: &Outbox,
        _: &Arc<Identity>,
        _: u64,
        _: Request,
        _: Bytes,
    ) {
        match **self {}
    }

    pub(crate) async fn disconnect(&self, _: ConnId) {
        match *self {}
    }

    pub(crate) async fn leave(&self) {
        match *self {}
    }

    pub(crate) fn dispatch(&self, _: Output, _: Option<RoomUuid>, _: &Arc<dyn MessageStore>, _: u64) {
        match *self {}
    }
}

/// Where connection numbers start: 1, on a single node.
pub(crate) fn first_conn_number() -> u64 {
    1
}

/// The id of the `n`th connection: a single node's ids are its counter.
pub(crate) fn conn_id(_slot: u16, n: u64) -> ConnId {
    ConnId(n)
}
