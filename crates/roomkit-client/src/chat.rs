//! [`ChatController`]: a thin handle on a joined room's chatroom.

use std::sync::Arc;

use roomkit_protocol::{
    ops::{
        FetchChatroomHistory, FetchChatroomHistoryOutput, FetchChatroomMembers, JoinChatroom, LeaveChatroom,
        MembersPage, RecallChatroomMessage, SendCustomMessage, SendMessageOutput, SendTextMessage,
    },
    ChatMessage, HistoryOrder, MessageUuid, UserUuid,
};

use crate::{
    rpc::{Apply, CallOptions},
    Error, RoomContext,
};

/// Options of [`ChatController::fetch_chatroom_history_messages`] (NERoom
/// `NEChatroomHistoryMessageSearchOption`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchHistoryOptions {
    /// Milliseconds since the Unix epoch; default: now for `Desc`, the beginning for `Asc`.
    pub start_time: Option<u64>,
    /// At most this many messages, 1–100.
    pub limit: u32,
    /// Newest first (default) or oldest first.
    pub order: HistoryOrder,
    /// By sequence number instead: the messages after this one, oldest first.
    pub after_seq: Option<u64>,
    /// Continues a page the server cut short: its
    /// [`next_cursor`](FetchChatroomHistoryOutput::next_cursor), with the other options
    /// unchanged (see [`ChatController::fetch_chatroom_history_page`]).
    pub cursor: Option<String>,
}

impl Default for FetchHistoryOptions {
    fn default() -> Self {
        Self { start_time: None, limit: 100, order: HistoryOrder::Desc, after_seq: None, cursor: None }
    }
}

/// Options of [`ChatController::send_custom_message`].
///
/// ```
/// # use roomkit_client::CustomMessageOptions;
/// // A like: delivered now to everyone in the chatroom, never stored.
/// let like = CustomMessageOptions { persist: false, ..Default::default() };
/// # assert!(like.to_user_uuids.is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomMessageOptions {
    /// The recipients (chatroom members), or `None` for everyone in the chatroom but the
    /// sender.
    pub to_user_uuids: Option<Vec<String>>,
    /// `false` sends an ephemeral message (likes, reactions, bullet comments): delivered at
    /// once at low priority, but not stored, not numbered (`seq` 0), not in history, not
    /// recallable, and not resent after a reconnect (it might arrive twice). Default `true`.
    pub persist: bool,
}

impl Default for CustomMessageOptions {
    fn default() -> Self {
        Self { to_user_uuids: None, persist: true }
    }
}

/// The room's chatroom (NERoom `NERoomChatController`).
#[derive(Clone, Debug)]
pub struct ChatController {
    pub(crate) room: RoomContext,
}

/// What [`ChatController::send_message`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageContent<'a> {
    /// A text message.
    Text(&'a str),
    /// An application-defined payload; `persist: false` for an ephemeral one (see
    /// [`CustomMessageOptions::persist`]).
    Custom {
        /// The payload.
        attach_str: &'a str,
        /// Stored and numbered (`true`), or ephemeral.
        persist: bool,
    },
}

/// A sent message as its acknowledgement tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SentMessage {
    /// The message as stored and delivered, with its sequence number and time.
    pub message: ChatMessage,
    /// Whether the message was on the server's disk when it was acknowledged. `false` when
    /// the server runs with eventual durability or an in-memory store (a crash of the server
    /// can then lose it even though it was acknowledged), and for an ephemeral message.
    pub durable: bool,
}

impl ChatController {
    /// Whether the room has a chatroom (it was created with `enable_chatroom`).
    pub fn is_supported(&self) -> bool {
        self.room.room.read(|m| m.info().chatroom_enabled)
    }

    /// Whether the local member is in the chatroom.
    pub fn is_in_chatroom(&self) -> bool {
        self.room.local_member().is_in_chatroom
    }

    /// Highest chatroom sequence number this client has seen (received or sent).
    pub fn last_seq(&self) -> u64 {
        self.room.room.read(|m| m.last_seq())
    }

    /// Enters the chatroom. Every room member, the caller included, gets
    /// `member_join_chatroom`. Entering again succeeds and changes nothing.
    pub async fn join_chatroom(&self) -> Result<(), Error> {
        self.enter(None).await.map(|_| ())
    }

    /// Enters the chatroom and returns its last `count` messages (1–100) the caller may see,
    /// oldest first, in the same call — to show a late joiner what was said.
    pub async fn join_chatroom_with_history(&self, count: u32) -> Result<Vec<ChatMessage>, Error> {
        let mut messages = self.enter(Some(count)).await?;
        messages.reverse();
        Ok(messages)
    }

    async fn enter(&self, history_count: Option<u32>) -> Result<Vec<ChatMessage>, Error> {
        let params = JoinChatroom { room_uuid: self.room.room_uuid(), history_count };
        let room = Arc::clone(&self.room.room);
        let digests = room.read(|m| m.digests());
        // On the receive task, before the chatroom's next message is told.
        let apply: Apply = Box::new(move |response| {
            // An error's missing data would decode as an empty answer: look at the code first.
            if !response.code.is_success() {
                return;
            }
            let Ok(out) = response.output::<JoinChatroom>() else { return };
            room.update(|m| {
                // What was said before entering is history, not something missed: a later
                // resume catches up from here.
                m.note_seq(out.last_seq);
                m.local_entered_chatroom(digests)
            });
        });
        let options = CallOptions { apply: Some(apply), resend: false, ..Default::default() };
        let out = self.room.session.call_with(&params, options).await?;
        // A digest applied meanwhile may have been sent before the entry, and the next one,
        // which counts it, may be an interval away: read the exact counts now. (Answered by
        // the room without the store, so in order with the digests: any later one is newer.)
        if self.room.room.read(|m| m.digests()) != digests {
            self.room.get_room_info().await?;
        }
        Ok(out.messages.into_iter().map(Arc::unwrap_or_clone).collect())
    }

    /// Leaves the chatroom: no further chatroom messages arrive. Every other room member
    /// gets `member_leave_chatroom`.
    pub async fn leave_chatroom(&self) -> Result<(), Error> {
        let room = Arc::clone(&self.room.room);
        let apply: Apply = Box::new(move |response| {
            if response.code.is_success() {
                room.update(|m| m.local_left_chatroom());
            }
        });
        let options = CallOptions { apply: Some(apply), resend: false, ..Default::default() };
        self.room.session.call_with(&LeaveChatroom { room_uuid: self.room.room_uuid() }, options).await?;
        Ok(())
    }

    /// Sends text to every chatroom member but the caller; returns the stored message, with
    /// its sequence number.
    pub async fn send_broadcast_text_message(&self, text: &str) -> Result<ChatMessage, Error> {
        self.send(None, MessageContent::Text(text)).await
    }

    /// Sends text to one chatroom member.
    pub async fn send_direct_text_message(&self, user_uuid: &str, text: &str) -> Result<ChatMessage, Error> {
        self.send(Some(vec![parse_user(user_uuid)?]), MessageContent::Text(text)).await
    }

    /// Sends text to exactly the listed chatroom members.
    pub async fn send_group_text_message(
        &self,
        user_uuids: &[&str],
        text: &str,
    ) -> Result<ChatMessage, Error> {
        let to = user_uuids.iter().map(|u| parse_user(u)).collect::<Result<Vec<_>, _>>()?;
        self.send(Some(to), MessageContent::Text(text)).await
    }

    /// Sends an application-defined payload to every chatroom member but the caller.
    pub async fn send_broadcast_custom_message(&self, attach_str: &str) -> Result<ChatMessage, Error> {
        self.send(None, MessageContent::Custom { attach_str, persist: true }).await
    }

    /// Sends an application-defined payload with options: to some members only, or
    /// ephemeral (`persist: false`) for likes and reactions. An ephemeral message comes back
    /// with `seq` 0; under the chatroom's rate cap it is the first refused
    /// (`CHATROOM_RATE_LIMITED`), and the SDK does not retry it.
    pub async fn send_custom_message(
        &self,
        attach_str: &str,
        options: CustomMessageOptions,
    ) -> Result<ChatMessage, Error> {
        let to = match &options.to_user_uuids {
            Some(users) => Some(users.iter().map(|u| parse_user(u)).collect::<Result<Vec<_>, _>>()?),
            None => None,
        };
        self.send(to, MessageContent::Custom { attach_str, persist: options.persist }).await
    }

    /// Sends `content` to the listed chatroom members, or with `to: None` to every chatroom
    /// member but the caller, and returns the message with whether its acknowledgement means
    /// it is on the server's disk ([`SentMessage::durable`]). The other send methods are this
    /// one, returning the message only.
    pub async fn send_message(
        &self,
        to: Option<&[&str]>,
        content: MessageContent<'_>,
    ) -> Result<SentMessage, Error> {
        let to =
            to.map(|users| users.iter().map(|u| parse_user(u)).collect::<Result<Vec<_>, _>>()).transpose()?;
        self.send_acknowledged(to, content).await
    }

    /// One page of the members inside the chatroom (NERoom `fetchChatroomMembers`), in the
    /// order they entered: `cursor` is `None` for the first page, then the previous page's
    /// `next_cursor`; `limit` is 1–100. The page's members and counts update the room's
    /// mirror ([`RoomContext::remote_members`], [`RoomContext::online_count`]).
    pub async fn fetch_chatroom_members(
        &self,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<MembersPage, Error> {
        let params = FetchChatroomMembers {
            room_uuid: self.room.room_uuid(),
            cursor: cursor.map(str::to_owned),
            limit: Some(limit),
        };
        let room = Arc::clone(&self.room.room);
        let apply: Apply = Box::new(move |response| {
            if let (true, Ok(page)) = (response.code.is_success(), response.output::<FetchChatroomMembers>())
            {
                room.update(|m| m.fetched(&page));
            }
        });
        self.room
            .session
            .call_with(&params, CallOptions { apply: Some(apply), resend: false, ..Default::default() })
            .await
    }

    /// Recent chatroom history the caller may see: broadcasts, and directed messages to or
    /// from the caller.
    ///
    /// One page: the server reads a bounded number of stored messages per request, so a
    /// caller who may see few of them can get fewer than `limit` with more to come; page on
    /// with [`fetch_chatroom_history_page`](Self::fetch_chatroom_history_page).
    pub async fn fetch_chatroom_history_messages(
        &self,
        options: FetchHistoryOptions,
    ) -> Result<Vec<ChatMessage>, Error> {
        let out = self.fetch_chatroom_history_page(options).await?;
        Ok(out.messages.into_iter().map(Arc::unwrap_or_clone).collect())
    }

    /// One page of chatroom history, as the server answers it: the messages, the chatroom's
    /// `first_seq` and `last_seq`, and a `next_cursor` when the server stopped reading before
    /// the page was full (pass it back as [`FetchHistoryOptions::cursor`] to continue).
    pub async fn fetch_chatroom_history_page(
        &self,
        options: FetchHistoryOptions,
    ) -> Result<FetchChatroomHistoryOutput, Error> {
        let params = FetchChatroomHistory {
            room_uuid: self.room.room_uuid(),
            start_time: options.start_time,
            limit: Some(options.limit),
            order: options.order,
            after_seq: options.after_seq,
            cursor: options.cursor,
        };
        self.room.session.call(&params).await
    }

    /// Recalls a message (NERoom `recallChatroomMessage`): its sender within the server's
    /// recall window (2 minutes by default), or the host at any time. Every chatroom member
    /// receives a notification message carrying the recalled id; returns that notification.
    pub async fn recall_chatroom_message(&self, message_uuid: &str) -> Result<ChatMessage, Error> {
        let message_uuid = MessageUuid::new(message_uuid).map_err(|e| Error::bad_id("message_uuid", e))?;
        let params = RecallChatroomMessage { room_uuid: self.room.room_uuid(), message_uuid };
        let out = self.room.session.call(&params).await?;
        Ok(Arc::unwrap_or_clone(out.message))
    }

    /// The one send path. A send is resendable: if the connection drops before the answer,
    /// it is written again after the reconnect with the same message id, so it is stored
    /// and delivered once. Its sequence number counts as seen. An ephemeral send is not
    /// resent (the server does not deduplicate it). A refusal, `MESSAGE_RATE_LIMITED` and
    /// `CHATROOM_RATE_LIMITED` included, is returned as it is, never retried.
    async fn send(
        &self,
        to: Option<Vec<UserUuid>>,
        content: MessageContent<'_>,
    ) -> Result<ChatMessage, Error> {
        Ok(self.send_acknowledged(to, content).await?.message)
    }

    async fn send_acknowledged(
        &self,
        to: Option<Vec<UserUuid>>,
        content: MessageContent<'_>,
    ) -> Result<SentMessage, Error> {
        let room_uuid = self.room.room_uuid();
        let message_uuid = Some(new_message_uuid());
        let resend = !matches!(content, MessageContent::Custom { persist: false, .. });
        let options = || CallOptions { apply: None, resend, epoch: None };
        let session = &self.room.session;
        let SendMessageOutput { message, durable } = match content {
            MessageContent::Text(text) => {
                let params =
                    SendTextMessage { room_uuid, message_uuid, to_user_uuid_list: to, text: text.into() };
                session.call_with(&params, options()).await?
            }
            MessageContent::Custom { attach_str, persist } => {
                let params = SendCustomMessage {
                    room_uuid,
                    message_uuid,
                    to_user_uuid_list: to,
                    attach_str: attach_str.into(),
                    persist,
                };
                session.call_with(&params, options()).await?
            }
        };
        self.room.room.change(|m| m.note_seq(message.seq));
        Ok(SentMessage { message: Arc::unwrap_or_clone(message), durable })
    }
}

fn parse_user(s: &str) -> Result<UserUuid, Error> {
    UserUuid::new(s).map_err(|e| Error::bad_id("to_user_uuid_list", e))
}

fn new_message_uuid() -> MessageUuid {
    MessageUuid::new(uuid::Uuid::new_v4().simple().to_string()).expect("hex is a valid id")
}

#[cfg(test)]
mod tests {
    use roomkit_core::transport::{Frame, Listener};
    use roomkit_protocol::{
        codec::{self, RequestFrame},
        ops::{
            FetchChatroomHistory, FetchChatroomHistoryOutput, GetRoomInfo, GetRoomInfoOutput, JoinChatroom,
            JoinRoom, Login, LoginOutput, Request,
        },
        Event,
    };

    use crate::{
        mirror::tests::{answer, counts, digest, member, room},
        ClientConfig, JoinRoomParams, RoomEvent, RoomKit,
    };

    /// Dave's side of a scripted room of 900, 600 in its chatroom: answers each request
    /// `conn` sends, until the connection ends, or returns once dave has entered the chatroom
    /// with `leave_after_entry`. With `digest_first`, the digest of the interval before the
    /// entry comes between `join_chatroom` and its answer; `get_room_info` counts the entry.
    async fn scripted_room(
        mut conn: roomkit_core::transport::Connection,
        digest_first: bool,
        leave_after_entry: bool,
    ) {
        let empty =
            FetchChatroomHistoryOutput { messages: Vec::new(), first_seq: 0, last_seq: 0, next_cursor: None };
        loop {
            let Ok(bytes) = conn.stream.recv().await else { return };
            let RequestFrame { id, request } = codec::decode_request(&bytes).expect("a request");
            let entered = matches!(request, Request::JoinChatroom(_));
            let mut frames = Vec::new();
            match request {
                Request::Login(_) => frames.push(codec::encode_output::<Login>(
                    id,
                    &LoginOutput { user_uuid: "dave".parse().unwrap(), name: "Dave".into() },
                )),
                Request::JoinRoom(_) => {
                    let mut joined = answer(vec![member("dave", false), member("m1", true)], (900, 600));
                    joined.next_cursor = Some("2".into());
                    frames.push(codec::encode_output::<JoinRoom>(id, &joined));
                }
                Request::JoinChatroom(_) => {
                    if digest_first {
                        frames
                            .push(codec::encode_event(&Event::MembersChanged(Box::new(digest((900, 600))))));
                    }
                    frames.push(codec::encode_output::<JoinChatroom>(id, &empty));
                }
                Request::GetRoomInfo(_) => {
                    let info = answer(vec![member("dave", true)], (0, 0)).room;
                    frames.push(codec::encode_output::<GetRoomInfo>(
                        id,
                        &GetRoomInfoOutput { room: info, counts: counts(900, 601) },
                    ));
                }
                Request::FetchChatroomHistory(_) => {
                    frames.push(codec::encode_output::<FetchChatroomHistory>(id, &empty));
                }
                other => panic!("unexpected request {other:?}"),
            }
            let frames: Vec<Frame> = frames.into_iter().map(Frame::from).collect();
            if conn.sink.send(&frames).await.is_err() || (entered && leave_after_entry) {
                return;
            }
        }
    }

    /// A digest sent before the entry can reach the client after its `join_chatroom` went out
    /// and before the answer (which reads the store). Counted by neither, the entry was
    /// missing from the counts until the next digest, an interval later: `join_chatroom`
    /// returned with the chatroom one short. It now returns with the exact counts.
    #[tokio::test]
    async fn join_chatroom_returns_exact_counts_when_an_older_digest_came_before_its_answer() {
        let (mut listener, connector) = roomkit_transport_memory::transport();
        let server = tokio::spawn(async move {
            scripted_room(listener.accept().await.expect("a connection"), true, false).await;
        });
        let kit = RoomKit::connect_with(connector, ClientConfig::default()).await.expect("connects");
        kit.login("dave", "token").await.expect("logs in");
        let params =
            JoinRoomParams { room_uuid: room().to_string(), user_name: "Dave".into(), ..Default::default() };
        let ctx = kit.room_service().join_room(params, Default::default()).await.expect("joins");
        assert_eq!(ctx.member_counts(), counts(900, 600));
        ctx.chat_controller().join_chatroom().await.expect("enters the chatroom");
        assert_eq!(ctx.member_counts(), counts(900, 601), "the entry is counted when join_chatroom returns");
        drop(kit);
        server.abort();
    }

    /// The same window on a resume: the chatroom is entered again after a reconnect, and a
    /// digest from before the entry comes between the request and its answer. The counts
    /// are exact when the room is resumed, not one short until the next digest.
    #[tokio::test]
    async fn a_resumed_chatroom_has_exact_counts_when_an_older_digest_came_before_the_entry() {
        let (mut listener, connector) = roomkit_transport_memory::transport();
        // The first connection is dropped once dave is in the chatroom; on the second, the
        // digest comes before the entry's answer.
        let server = tokio::spawn(async move {
            scripted_room(listener.accept().await.expect("a connection"), false, true).await;
            scripted_room(listener.accept().await.expect("a connection"), true, false).await;
            std::future::pending::<()>().await;
        });
        let mut config = ClientConfig::default();
        config.reconnect.initial_backoff = std::time::Duration::from_millis(10);
        let kit = RoomKit::connect_with(connector, config).await.expect("connects");
        kit.login("dave", "token").await.expect("logs in");
        let params =
            JoinRoomParams { room_uuid: room().to_string(), user_name: "Dave".into(), ..Default::default() };
        let ctx = kit.room_service().join_room(params, Default::default()).await.expect("joins");
        let mut events = ctx.events();
        ctx.chat_controller().join_chatroom().await.expect("enters the chatroom");
        let resumed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(event) = events.recv().await {
                if matches!(event, RoomEvent::Resumed { .. }) {
                    return;
                }
            }
            panic!("the room's events ended before it resumed");
        });
        resumed.await.expect("the room resumes");
        assert_eq!(ctx.member_counts(), counts(900, 601), "the entry is counted when the room resumes");
        drop(kit);
        server.abort();
    }
}
