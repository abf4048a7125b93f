//! Reading a room's subject into its view (headers only, once per room, and again after a
//! failure made the view stale), settling what earlier failures left in doubt; and listing
//! the stored rooms.

use std::{sync::atomic::Ordering, time::Duration};

use async_nats::jetstream::{
    consumer::{pull, AckPolicy, DeliverPolicy},
    context::PublishErrorKind,
    message::StreamMessage,
    stream::{DeleteMessageErrorKind, LastRawMessageErrorKind},
};
use futures::{StreamExt, TryStreamExt};
use roomkit_core::store::{RoomRecord, StoreError};
use roomkit_protocol::RoomUuid;
use roomkit_store_redb::record::decode_room_record;
use tokio::sync::MutexGuard;

use crate::{
    err,
    layout::{self, room_token},
    view::{Doubt, RoomView, Scanned, Slot},
    Inner,
};

/// The wait before reading a subject again when a replica was behind.
const SCAN_RETRY: Duration = Duration::from_millis(50);

/// The header a key-value bucket marks deletions and purges with.
const KV_OPERATION_HEADER: &str = "KV-Operation";

/// Rooms whose newest sequence number [`Inner::rooms`] reads at a time.
const ROOMS_AT_ONCE: usize = 32;

impl Inner {
    /// Makes `room`'s view ready, reading the subject if needed.
    pub(crate) async fn ensure_ready(&self, room: &RoomUuid) -> Result<(), StoreError> {
        if self.with_view(room, |_| ()).is_some() {
            return Ok(());
        }
        let held = self.apply_lock.lock().await;
        self.ensure_ready_locked(&held, room).await
    }

    /// [`ensure_ready`](Self::ensure_ready) for a caller holding the commit lock.
    pub(crate) async fn ensure_ready_locked(
        &self,
        _held: &MutexGuard<'_, ()>,
        room: &RoomUuid,
    ) -> Result<(), StoreError> {
        let doubt = match self.views.lock().expect("not poisoned").get(room) {
            Some(Slot::Ready(_)) => return Ok(()),
            Some(Slot::Stale(doubt)) => doubt.clone(),
            None => Doubt::default(),
        };
        let scan = self.scan(room).await?;
        let (mut view, left_out) = RoomView::from_scan(scan, &doubt);
        if !doubt.ids.is_empty() || !left_out.is_empty() {
            // A fence first: a publish from before that is still under way expects an older
            // newest message, so JetStream refuses it; and what is deleted next is never the
            // subject's newest message.
            let seq = self.fence(room, view.last_seq, view.last_stream_seq).await.map_err(|e| {
                StoreError(format!("reading room {room} again: {e}; it is read again next time"))
            })?;
            view.fenced(seq);
        }
        for seq in left_out.iter().chain(&doubt.seqs) {
            self.delete(*seq).await?;
        }
        self.views.lock().expect("not poisoned").insert(room.clone(), Slot::Ready(view));
        Ok(())
    }

    /// Stores a fence on `room`'s subject, expecting `expected` as its newest message;
    /// returns its stream sequence.
    pub(crate) async fn fence(
        &self,
        room: &RoomUuid,
        last_seq: u64,
        expected: u64,
    ) -> Result<u64, StoreError> {
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .headers(layout::fence_headers(last_seq))
            .expected_last_subject_sequence(expected);
        let subject = self.names.subject(room);
        let ack = async { self.js.send_publish(subject, publish).await?.await }.await;
        ack.map(|ack| ack.sequence).map_err(|e| {
            if e.kind() == PublishErrorKind::WrongLastSequence {
                err("storing a fence: the room changed meanwhile", e)
            } else {
                err("storing a fence", e)
            }
        })
    }

    /// Deletes the stored message `seq`; one already gone is no error.
    pub(crate) async fn delete(&self, seq: u64) -> Result<(), StoreError> {
        match self.stream.delete_message(seq).await {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), DeleteMessageErrorKind::JetStream(ref j) if is_gone(j)) => Ok(()),
            Err(e) => Err(err(&format!("deleting stored message {seq}"), e)),
        }
    }

    /// The newest stored message of `room`'s subject, if any.
    pub(crate) async fn newest(&self, room: &RoomUuid) -> Result<Option<StreamMessage>, StoreError> {
        match self.stream.get_last_raw_message_by_subject(&self.names.subject(room)).await {
            Ok(message) => Ok(Some(message)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(err(&format!("reading room {room}"), e)),
        }
    }

    /// Every stored message of `room`'s subject up to its newest, headers only, in stream
    /// order.
    ///
    /// The newest message comes from the stream's leader; the consumer may run on a replica
    /// that is behind (just restarted, say), so a read that stops short of the newest message
    /// is made again, for `request_timeout` at most.
    async fn scan(&self, room: &RoomUuid) -> Result<Vec<Scanned>, StoreError> {
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        loop {
            let Some(newest) = self.newest(room).await? else {
                return Ok(Vec::new());
            };
            let scan = self.scan_to(room, newest.sequence).await?;
            let reached = scan.last().map_or(0, |m| m.stream_seq);
            if reached >= newest.sequence {
                return Ok(scan);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(StoreError(format!(
                    "reading room {room}: its messages up to {} were not all readable within {:?} \
                     (request_timeout; a replica is behind): try again",
                    newest.sequence, self.config.request_timeout
                )));
            }
            tokio::time::sleep(SCAN_RETRY).await;
        }
    }

    /// The stored messages of `room`'s subject up to stream sequence `newest`, headers only,
    /// in stream order, as an ephemeral consumer delivers them.
    async fn scan_to(&self, room: &RoomUuid, newest: u64) -> Result<Vec<Scanned>, StoreError> {
        let context = format!("reading room {room}");
        let consumer = self
            .stream
            .create_consumer(pull::Config {
                filter_subject: self.names.subject(room),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::None,
                headers_only: true,
                memory_storage: true,
                // Gone by itself if the scan is cut short.
                inactive_threshold: self.config.request_timeout,
                ..Default::default()
            })
            .await
            .map_err(|e| err(&context, e))?;
        let mut scan = Vec::new();
        let result = async {
            loop {
                let mut batch = consumer
                    .fetch()
                    .max_messages(self.config.scan_batch)
                    .messages()
                    .await
                    .map_err(|e| err(&context, e))?;
                let mut got = 0;
                while let Some(message) = batch.next().await {
                    let message = message.map_err(|e| err(&context, e))?;
                    let stream_seq = message.info().map_err(|e| err(&context, e))?.stream_sequence;
                    got += 1;
                    self.scanned.fetch_add(1, Ordering::Relaxed);
                    let headers = message.headers.as_ref();
                    scan.push(Scanned {
                        stream_seq,
                        seq: layout::number(headers, layout::SEQ_HEADER),
                        time: layout::number(headers, layout::TIME_HEADER).unwrap_or(0),
                        last_seq: layout::number(headers, layout::LAST_SEQ_HEADER),
                        id: layout::text(headers, layout::MSG_ID_HEADER).map(str::to_owned),
                        fence: layout::text(headers, layout::FENCE_HEADER).is_some(),
                    });
                    if stream_seq >= newest {
                        return Ok(());
                    }
                }
                if got == 0 {
                    return Ok(());
                }
            }
        }
        .await;
        let name = consumer.cached_info().name.clone();
        // The consumer goes away by itself when idle; deleting it now is only tidier.
        let _ = self.stream.delete_consumer(&name).await;
        result.map(|()| scan)
    }

    /// Every stored room with its newest sequence number.
    pub(crate) async fn rooms(&self) -> Result<Vec<(RoomRecord, u64)>, StoreError> {
        let keys: Vec<String> = self
            .rooms
            .keys()
            .await
            .map_err(|e| err("listing rooms", e))?
            .try_collect()
            .await
            .map_err(|e| err("listing rooms", e))?;
        let found: Vec<Option<(RoomRecord, u64)>> =
            futures::stream::iter(keys.into_iter().map(|key| self.room(key)))
                .buffered(ROOMS_AT_ONCE)
                .try_collect()
                .await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// The room stored under `key` with its newest sequence number; `None` if it was deleted
    /// meanwhile.
    pub(crate) async fn room(&self, key: String) -> Result<Option<(RoomRecord, u64)>, StoreError> {
        let subject = format!("$KV.{}.{key}", self.names.bucket);
        let stored = match self.rooms_stream.get_last_raw_message_by_subject(&subject).await {
            Ok(stored) => stored,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(err(&format!("reading room {key}"), e)),
        };
        // A deleted or purged key keeps a marker.
        if layout::text(Some(&stored.headers), KV_OPERATION_HEADER).is_some_and(|op| op != "PUT") {
            return Ok(None);
        }
        let bytes = stored.payload;
        let record = decode_room_record(&bytes)
            .map_err(|e| err(&format!("the record of room {key} is corrupt"), e))?;
        let room = record.info.room_uuid.clone();
        if room_token(&room) != key {
            return Err(StoreError(format!("the record stored under {key} is room {room}'s")));
        }
        let last_seq = match self.known_last_seq(&room) {
            Known::Ready(last_seq) => last_seq,
            Known::Stale => {
                self.ensure_ready(&room).await?;
                self.with_view(&room, |v| v.last_seq).unwrap_or(0)
            }
            // Not indexed: the subject's newest message holds it, retention never removes it.
            Known::Unread => self.newest(&room).await?.map_or(0, |m| {
                let headers = Some(&m.headers);
                layout::number(headers, layout::LAST_SEQ_HEADER)
                    .or_else(|| layout::number(headers, layout::SEQ_HEADER))
                    .unwrap_or(0)
            }),
        };
        Ok(Some((record, last_seq)))
    }
}

/// Whether JetStream refused a delete because the message is not there (any more): "sequence
/// not found", or a failed delete for want of the message ("no message found", "stream store
/// EOF" past the stream's end).
fn is_gone(e: &async_nats::jetstream::Error) -> bool {
    const SEQUENCE_NOT_FOUND: u64 = 10043;
    const DELETE_FAILED: u64 = 10057;
    let description = e.to_string();
    e.error_code().0 == SEQUENCE_NOT_FOUND
        || (e.error_code().0 == DELETE_FAILED
            && (description.contains("no message found") || description.contains("EOF")))
}

/// What the store knows of a room's newest sequence number.
enum Known {
    /// Its view is ready and holds it.
    Ready(u64),
    /// Its view must be read again.
    Stale,
    /// It has no view yet.
    Unread,
}

impl Inner {
    fn known_last_seq(&self, room: &RoomUuid) -> Known {
        match self.views.lock().expect("not poisoned").get(room) {
            Some(Slot::Ready(view)) => Known::Ready(view.last_seq),
            Some(Slot::Stale(_)) => Known::Stale,
            None => Known::Unread,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jetstream_error(code: u64, description: &str) -> async_nats::jetstream::Error {
        let json = format!(r#"{{"code":400,"err_code":{code},"description":"{description}"}}"#);
        serde_json::from_str(&json).expect("an error")
    }

    /// What nats-server 2.9 answers to a delete of a message that is not there.
    #[test]
    fn a_delete_of_a_message_already_gone_is_no_failure() {
        assert!(is_gone(&jetstream_error(10043, "sequence 2 not found")));
        assert!(is_gone(&jetstream_error(10057, "no message found")));
        assert!(is_gone(&jetstream_error(10057, "stream store EOF")));
        assert!(!is_gone(&jetstream_error(10057, "message delete failed: deletes denied")));
        assert!(!is_gone(&jetstream_error(10008, "JetStream system temporarily unavailable")));
    }
}
