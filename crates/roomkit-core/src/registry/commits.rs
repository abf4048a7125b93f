//! The registry's commits: what the driver must make durable now, how many commits it may
//! keep in flight, and what a commit's result does (the rules are `output.rs`'s).

use roomkit_protocol::ops::Response;

use super::RoomRegistry;
use crate::{
    store::{StoreError, StoreOp},
    ConnId, Error,
};

impl RoomRegistry {
    /// Lets the driver keep up to `max` commits in flight (at least one; one by default):
    /// [`take_commit`](Self::take_commit) hands the next commit before the previous one is
    /// reported, so that a store which syncs to disk can take it as soon as the previous sync
    /// is done. Only for a driver whose store applies one caller's commits in the order they
    /// were handed, and that refuses the commits of a failed [`commit_epoch`](Self::commit_epoch):
    /// a failed commit fails every commit taken after it and not yet reported.
    #[must_use]
    pub fn with_commits_in_flight(mut self, max: usize) -> Self {
        self.outputs.max_in_flight = max.max(1);
        self
    }

    /// How many times a commit of this registry has failed, not counting the later commits
    /// each failure failed with it. A driver with several commits in flight hands each commit
    /// to its store with the epoch at the time it was taken: once a commit fails, the store
    /// must refuse the commits of the same epoch still waiting (they were taken before the
    /// failure was reported, and the registry counts them as failed); those taken after the
    /// report carry the next epoch.
    #[must_use]
    pub fn commit_epoch(&self) -> u64 {
        self.outputs.epoch()
    }

    /// Queues the driver's own answer `result` to request `request_id` of `conn` (an id the
    /// driver keeps for itself, such as its admin API's), held like the acknowledgement of a
    /// member's send: released once the commits before it are reported, and
    /// [`Error::NotStored`] instead if the commit holding the message it carries fails. For a
    /// driver that answers a command such as
    /// [`send_backend_message`](Self::send_backend_message) only once its message is stored.
    pub fn acknowledge(&mut self, conn: ConnId, request_id: u64, result: Result<Response, Error>) {
        self.outputs.acknowledge(conn, request_id, result);
    }

    /// How many commits have been reported ([`handle_commit`](Self::handle_commit)); commits
    /// are numbered from 1 in the order they are taken.
    #[must_use]
    pub fn commits_reported(&self) -> u64 {
        self.outputs.reported()
    }

    /// The number of the commit that will hold the last store operation of what was handled
    /// so far (0 if nothing was ever stored): once [`commits_reported`](Self::commits_reported)
    /// reaches it, everything handled so far is stored or settled as failed. For a driver that
    /// must wait for that (handing a room to another node, say).
    #[must_use]
    pub fn last_commit_needed(&self) -> u64 {
        self.outputs.last_needed()
    }

    /// The store operations to make durable now, in one commit, before the outputs that
    /// follow them are released; report the result with [`handle_commit`](Self::handle_commit).
    /// Empty when there is nothing to store, while as many commits are unreported as the
    /// driver may keep in flight ([`with_commits_in_flight`](Self::with_commits_in_flight)),
    /// and while a commit an earlier failure doomed is unreported.
    #[must_use]
    pub fn take_commit(&mut self) -> Vec<StoreOp> {
        self.outputs.take_commit()
    }

    /// Reports the oldest commit taken with [`take_commit`](Self::take_commit) and not yet
    /// reported. The outputs it held back become ready. If it failed, its messages were
    /// neither acknowledged nor delivered, so they are forgotten here too: a retry with the
    /// same message id is stored as new; their deliveries are dropped and their sends
    /// answered [`Error::NotStored`]. A recall in it is undone: its answer is
    /// [`Error::NotStored`] too, and the message may be recalled again. With several commits
    /// in flight, a failure fails the commits taken after it as well, whatever their own
    /// reports (see [`commit_epoch`](Self::commit_epoch)).
    pub fn handle_commit(&mut self, result: Result<(), StoreError>) {
        let Some((done, durable)) = self.outputs.commit_reported(result.is_ok()) else { return };
        if !durable {
            for (room, message) in &done.appended {
                if let Some(chat) = self.rooms.get_mut(room).and_then(|r| r.chatroom.as_mut()) {
                    if message.recalled {
                        // The recalled form of a stored message: the stored one stands.
                        chat.unmark_recalled(&message.message_uuid);
                    } else {
                        chat.forget(message);
                    }
                }
            }
        }
    }
}
