//! A commit: room records and deletions in order, chat messages published with their dedupe
//! id and their fence (rooms together, each room's messages one after the other), all or
//! nothing; then retention and the deletion of what is no longer served.

use std::{
    collections::HashMap,
    error::Error as _,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

use async_nats::{
    jetstream::{context::PublishErrorKind, message::PublishMessage, stream::LastRawMessageErrorKind},
    HeaderMap,
};
use bytes::Bytes;
use futures::future::join_all;
use roomkit_core::store::{StoreError, StoreOp};
use roomkit_protocol::{RoomUuid, SharedMessage};
use roomkit_store_redb::record::{encode_message_record, encode_room_record};
use tokio::sync::MutexGuard;

use crate::{
    err,
    layout::{self, room_token},
    view::{Doubt, Entry, RoomView, Slot},
    Inner,
};

/// How many other dedupe ids a message may be given when its own points at a message that
/// is gone (stored by a failed commit and deleted within the dedupe window, or a
/// byte-identical message of a room ended since).
const MAX_RENAMES: u32 = 3;

/// A dedupe id used nowhere else: `id` with this process's start and a counter.
fn unique_id(id: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let start = START.get_or_init(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    });
    format!("{id}+{}.{start:x}.{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// One room's part of a commit: what its next publish expects, and what it stored.
struct Work {
    subject: String,
    /// The stream sequence of the subject's newest stored message.
    fence: u64,
    /// The room's newest sequence number.
    last_seq: u64,
    /// The room's newest sequence number before this commit.
    last_seq_before: u64,
    /// The messages stored by this commit, with the room's newest sequence number then.
    stored: Vec<(Entry, u64)>,
}

/// Why a publish failed.
enum Failure {
    /// JetStream refused it: the subject changed since this store read it.
    Stale(StoreError),
    /// JetStream refused it for another reason.
    Refused(StoreError),
    /// No acknowledgement came: it may be stored, now or later, under one of these ids.
    InDoubt(StoreError, Vec<String>),
}

/// What came of publishing under one dedupe id.
enum Sent {
    /// Stored at this stream sequence (now, or by an earlier attempt).
    Stored(u64),
    /// No acknowledgement came (and it may be stored).
    Unanswered(String),
    /// JetStream took it for a duplicate of a message that is gone.
    IdTaken,
}

/// A failed commit: the error, and the rooms to read again before use (with what is in
/// doubt, and whether another store wrote after this commit's messages).
struct Failed {
    error: StoreError,
    stale: Vec<(RoomUuid, Doubt, bool)>,
}

impl From<StoreError> for Failed {
    fn from(error: StoreError) -> Self {
        Self { error, stale: Vec::new() }
    }
}

impl Inner {
    pub(crate) async fn apply(&self, now: u64, ops: &[StoreOp]) -> Result<(), StoreError> {
        let held = self.apply_lock.lock().await;
        let mut works = HashMap::new();
        match self.apply_ops(&held, ops, &mut works).await {
            Ok(()) => {
                self.settle(now, works).await;
                Ok(())
            }
            Err(failed) => {
                self.roll_back(works, failed.stale).await;
                Err(failed.error)
            }
        }
    }

    async fn apply_ops(
        &self,
        held: &MutexGuard<'_, ()>,
        ops: &[StoreOp],
        works: &mut HashMap<RoomUuid, Work>,
    ) -> Result<(), Failed> {
        let mut i = 0;
        while i < ops.len() {
            match &ops[i] {
                StoreOp::PutRoom(record) => {
                    let room = &record.info.room_uuid;
                    self.rooms
                        .put(room_token(room), encode_room_record(record).into())
                        .await
                        .map_err(|e| err(&format!("storing room {room}"), e))?;
                    i += 1;
                }
                StoreOp::DeleteRoom(room) => {
                    self.delete_room(room, works).await?;
                    i += 1;
                }
                StoreOp::Append { .. } => {
                    let run = ops[i..].iter().take_while(|op| matches!(op, StoreOp::Append { .. })).count();
                    self.append(held, &ops[i..i + run], works).await?;
                    i += run;
                }
            }
        }
        Ok(())
    }

    /// Removes `room`'s record and purges its subject.
    async fn delete_room(&self, room: &RoomUuid, works: &mut HashMap<RoomUuid, Work>) -> Result<(), Failed> {
        self.rooms.purge(room_token(room)).await.map_err(|e| err(&format!("deleting room {room}"), e))?;
        if let Err(e) = self.stream.purge().filter(self.names.subject(room)).await {
            let error = err(&format!("purging room {room}'s messages"), e);
            return Err(Failed { error, stale: vec![(room.clone(), Doubt::default(), false)] });
        }
        // What this commit stored for the room is gone with the rest.
        works.remove(room);
        let mut views = self.views.lock().expect("not poisoned");
        let slot = match views.remove(room) {
            // A publish from before may still arrive: keep fencing it off.
            Some(Slot::Stale(doubt)) if !doubt.ids.is_empty() => {
                Slot::Stale(Doubt { ids: doubt.ids, seqs: Vec::new() })
            }
            _ => Slot::Ready(RoomView::default()),
        };
        views.insert(room.clone(), slot);
        Ok(())
    }

    /// Publishes a run of appends: rooms together, each room's messages in order.
    async fn append(
        &self,
        held: &MutexGuard<'_, ()>,
        ops: &[StoreOp],
        works: &mut HashMap<RoomUuid, Work>,
    ) -> Result<(), Failed> {
        let mut rooms: Vec<(RoomUuid, Vec<&SharedMessage>)> = Vec::new();
        for op in ops {
            let StoreOp::Append { room, message } = op else { continue };
            match rooms.iter_mut().find(|(r, _)| r == room) {
                Some((_, messages)) => messages.push(message),
                None => rooms.push((room.clone(), vec![message])),
            }
        }
        for (room, _) in &rooms {
            if works.contains_key(room) {
                continue;
            }
            self.ensure_ready_locked(held, room).await?;
            let (fence, last_seq) = self
                .with_view(room, |v| (v.last_stream_seq, v.last_seq))
                .ok_or_else(|| StoreError(format!("room {room} changed while it was read")))?;
            let subject = self.names.subject(room);
            works.insert(
                room.clone(),
                Work { subject, fence, last_seq, last_seq_before: last_seq, stored: Vec::new() },
            );
        }
        let failed = AtomicBool::new(false);
        let chains = rooms.into_iter().map(|(room, messages)| {
            let work = works.remove(&room).expect("prepared above");
            let failed = &failed;
            async move {
                let (work, failure) = self.chain(&room, work, &messages, failed).await;
                (room, work, failure)
            }
        });
        let mut failure = None;
        let mut stale = Vec::new();
        for (room, work, outcome) in join_all(chains).await {
            works.insert(room.clone(), work);
            let error = match outcome {
                None => continue,
                Some(Failure::Refused(error)) => error,
                Some(Failure::Stale(error)) => {
                    stale.push((room, Doubt::default(), true));
                    error
                }
                Some(Failure::InDoubt(error, ids)) => {
                    stale.push((room, Doubt { ids: ids.into_iter().collect(), seqs: Vec::new() }, false));
                    error
                }
            };
            failure.get_or_insert(error);
        }
        match failure {
            None => Ok(()),
            Some(error) => Err(Failed { error, stale }),
        }
    }

    /// Publishes one room's messages one after the other, each expecting the one before;
    /// stops at the first failure, or when another room's chain failed.
    async fn chain(
        &self,
        room: &RoomUuid,
        mut work: Work,
        messages: &[&SharedMessage],
        failed: &AtomicBool,
    ) -> (Work, Option<Failure>) {
        for message in messages {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let record = encode_message_record(message);
            let id = layout::message_id(room, message, &record);
            let last_seq = work.last_seq.max(message.seq);
            let headers = layout::message_headers(message, last_seq, &id);
            match self.publish(&work.subject, headers, Bytes::from(record), work.fence, &id).await {
                Ok(stream_seq) => {
                    work.fence = work.fence.max(stream_seq);
                    work.last_seq = last_seq;
                    work.stored.push((Entry { seq: message.seq, stream_seq, time: message.time }, last_seq));
                }
                Err(failure) => {
                    failed.store(true, Ordering::Relaxed);
                    return (work, Some(failure));
                }
            }
        }
        (work, None)
    }

    /// Publishes one message expecting `expected` as the subject's newest stored message, sent
    /// again with the same dedupe id while no acknowledgement comes; returns its stream
    /// sequence.
    async fn publish(
        &self,
        subject: &str,
        mut headers: HeaderMap,
        payload: Bytes,
        expected: u64,
        id: &str,
    ) -> Result<u64, Failure> {
        let mut ids = vec![id.to_owned()];
        for _ in 0..=MAX_RENAMES {
            let current = ids.last().expect("one id at least").clone();
            match self.publish_as(subject, &headers, &payload, expected, &current).await? {
                Sent::Stored(stream_seq) => return Ok(stream_seq),
                Sent::Unanswered(error) => {
                    let error = StoreError(format!(
                        "storing a message on {subject}: no acknowledgement after {} attempts, the outcome is uncertain ({error})",
                        self.config.publish_attempts
                    ));
                    return Err(Failure::InDoubt(error, ids));
                }
                // The id points at a message deleted since: store this one under another id.
                Sent::IdTaken => {
                    ids.push(unique_id(id));
                    headers.insert(layout::MSG_ID_HEADER, ids.last().expect("just pushed").as_str());
                }
            }
        }
        let error = StoreError(format!("storing a message on {subject}: its dedupe ids are all taken"));
        Err(Failure::InDoubt(error, ids))
    }

    /// [`publish`](Self::publish) under one dedupe id, `publish_attempts` times at most.
    async fn publish_as(
        &self,
        subject: &str,
        headers: &HeaderMap,
        payload: &Bytes,
        expected: u64,
        id: &str,
    ) -> Result<Sent, Failure> {
        let mut last_error = String::new();
        let mut in_doubt = false;
        for _ in 0..self.config.publish_attempts {
            let publish = PublishMessage::build()
                .headers(headers.clone())
                .payload(payload.clone())
                .expected_last_subject_sequence(expected);
            let result = async { self.js.send_publish(subject.to_owned(), publish).await?.await }.await;
            let lost = result.is_ok() && self.take_lost_ack();
            match result {
                Ok(_) if lost => {
                    in_doubt = true;
                    last_error = "the acknowledgement was lost".to_owned();
                }
                Ok(ack) if !ack.duplicate => return Ok(Sent::Stored(ack.sequence)),
                Ok(ack) => match self.is_stored(ack.sequence, subject, id).await {
                    Ok(true) => return Ok(Sent::Stored(ack.sequence)),
                    Ok(false) => return Ok(Sent::IdTaken),
                    Err(e) => last_error = e.to_string(),
                },
                // An earlier attempt may be what moved the subject on (servers that check the
                // expected sequence before the dedupe id): then it is the newest message.
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence && in_doubt => {
                    return match self.newest_is(subject, id).await {
                        Ok(Some(stream_seq)) => Ok(Sent::Stored(stream_seq)),
                        Ok(None) => Ok(Sent::Unanswered(format!("then refused: {e}"))),
                        Err(e) => Ok(Sent::Unanswered(e.to_string())),
                    };
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    let why = format!(
                        "storing a message on {subject}: another store wrote the room since this one read it"
                    );
                    return Err(Failure::Stale(err(&why, e)));
                }
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound || refused(&e) => {
                    return Err(Failure::Refused(err(&format!("storing a message on {subject}"), e)));
                }
                Err(e) => {
                    in_doubt = true;
                    last_error = e.to_string();
                }
            }
        }
        Ok(Sent::Unanswered(last_error))
    }

    /// The stream sequence of the subject's newest message if it is the one published under
    /// `id`.
    async fn newest_is(&self, subject: &str, id: &str) -> Result<Option<u64>, StoreError> {
        match self.stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => {
                Ok((layout::text(Some(&m.headers), layout::MSG_ID_HEADER) == Some(id)).then_some(m.sequence))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(err(&format!("reading the newest message of {subject}"), e)),
        }
    }

    /// Whether the message at `seq` is the one published on `subject` under `id`.
    async fn is_stored(&self, seq: u64, subject: &str, id: &str) -> Result<bool, StoreError> {
        match self.stream.get_raw_message(seq).await {
            Ok(m) => Ok(m.subject.as_str() == subject
                && layout::text(Some(&m.headers), layout::MSG_ID_HEADER) == Some(id)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(err("checking a duplicate", e)),
        }
    }

    fn take_lost_ack(&self) -> bool {
        self.lost_acks.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }

    /// After a successful commit: the views take its messages, retention drops what it no
    /// longer keeps, and what is no longer served is deleted (what fails to be is tried again
    /// after the next commit).
    async fn settle(&self, now: u64, works: HashMap<RoomUuid, Work>) {
        let mut garbage = Vec::new();
        for (room, work) in works {
            let doomed = self.with_view(&room, |view| {
                for (entry, last_seq) in work.stored {
                    view.stored(entry, last_seq);
                }
                view.enforce(self.config.retention, now);
                std::mem::take(&mut view.garbage)
            });
            garbage.extend(doomed.unwrap_or_default().into_iter().map(|seq| (room.clone(), seq)));
        }
        let results = join_all(garbage.iter().map(|(_, seq)| self.delete(*seq))).await;
        for ((room, seq), result) in garbage.into_iter().zip(results) {
            if let Err(e) = result {
                tracing::warn!(%room, seq, error = %e, "a message no longer served could not be deleted yet");
                self.with_view(&room, |view| view.garbage.push(seq));
            }
        }
    }

    /// After a failed commit: deletes what it stored. A room whose newest stored message may
    /// be one of those first gets a fence after them (a message is never deleted while it is
    /// its subject's newest, see the module docs). The rooms where this fails, or whose
    /// outcome is in doubt, are read again before use.
    async fn roll_back(&self, works: HashMap<RoomUuid, Work>, stale: Vec<(RoomUuid, Doubt, bool)>) {
        let overtaken: Vec<RoomUuid> = stale.iter().filter(|s| s.2).map(|s| s.0.clone()).collect();
        let mut doubts: HashMap<RoomUuid, Doubt> = HashMap::new();
        for (room, doubt, _) in stale {
            doubts.entry(room).or_default().merge(doubt);
        }
        let rooms = works.into_iter().filter(|(_, work)| !work.stored.is_empty()).map(|(room, work)| {
            let overtaken = overtaken.contains(&room);
            async move {
                let seqs: Vec<u64> = work.stored.iter().map(|(e, _)| e.stream_seq).collect();
                // Another store wrote after these: they are not the newest.
                if !overtaken {
                    match self.fence(&room, work.last_seq_before, work.fence).await {
                        Ok(fence) => {
                            self.with_view(&room, |view| view.fenced(fence));
                        }
                        Err(_) => return (room, seqs),
                    }
                }
                let results = join_all(seqs.iter().map(|seq| self.delete(*seq))).await;
                let failed =
                    seqs.into_iter().zip(results).filter(|(_, r)| r.is_err()).map(|(seq, _)| seq).collect();
                (room, failed)
            }
        });
        for (room, failed) in join_all(rooms).await {
            if !failed.is_empty() {
                doubts.entry(room).or_default().seqs.extend(failed);
            }
        }
        for (room, doubt) in doubts {
            self.mark_stale(&room, doubt);
        }
    }
}

/// Whether JetStream answered the publish with an error (so it is not stored), rather than
/// not answering.
fn refused(e: &async_nats::jetstream::context::PublishError) -> bool {
    e.source().is_some_and(|s| s.is::<async_nats::jetstream::Error>())
}
