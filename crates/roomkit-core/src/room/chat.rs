//! Chatroom rules: entering and leaving, sending (members and the backend), recalling, and
//! history queries, which are answered from the store.

use roomkit_protocol::{
    ops::{FetchChatroomHistory, RecallOutput, SendCustomMessage, SendMessageOutput, SendTextMessage},
    Event, MessageBody, MessageUuid, NotificationType, Priority, Role, SharedMessage, UserUuid,
};

use super::{Caller, Change, Room};
use crate::{
    chatroom::{Chatroom, Draft, Recent},
    config::MAX_HISTORY_LIMIT,
    history::{HistoryRead, HistoryRequest, Start},
    registry::Outputs,
    store::StoreOp,
    validate::{check_body, check_recipients},
    Audience, ConnId, CoreConfig, Error,
};

/// A member's `send_text_message` / `send_custom_message`.
#[derive(Debug)]
pub(crate) struct Send {
    pub(crate) message_uuid: Option<MessageUuid>,
    pub(crate) to: Option<Vec<UserUuid>>,
    pub(crate) body: MessageBody,
    /// `false` for an ephemeral message.
    pub(crate) persist: bool,
}

impl Send {
    /// A `send_text_message`.
    pub(crate) fn text(p: SendTextMessage) -> Self {
        let body = MessageBody::Text { text: p.text };
        Self { message_uuid: p.message_uuid, to: p.to_user_uuid_list, body, persist: true }
    }

    /// A `send_custom_message`, ephemeral without `persist`.
    pub(crate) fn custom(p: SendCustomMessage) -> Self {
        let body = MessageBody::Custom { attach_str: p.attach_str };
        Self { message_uuid: p.message_uuid, to: p.to_user_uuid_list, body, persist: p.persist }
    }
}

impl Room {
    fn chat(&self) -> Result<&Chatroom, Error> {
        self.chatroom.as_ref().ok_or_else(|| Error::ChatroomNotEnabled(self.info.room_uuid.clone()))
    }

    fn chat_mut(&mut self) -> Result<&mut Chatroom, Error> {
        self.chatroom.as_mut().ok_or_else(|| Error::ChatroomNotEnabled(self.info.room_uuid.clone()))
    }

    /// `join_chatroom`: enters (announced to the whole room, once), then asks the store for
    /// the chatroom's newest sequence number and, with `history_count`, its last messages.
    pub(crate) fn join_chatroom(
        &mut self,
        now: u64,
        config: &CoreConfig,
        caller: Caller<'_>,
        request_id: u64,
        history_count: Option<u32>,
        out: &mut Outputs,
    ) -> Result<(), Error> {
        self.member_on(caller.conn, caller.user())?;
        self.chat()?;
        if let Some(member) = self.enter_chatroom(caller.user(), out) {
            if self.presence.per_member() {
                let room_uuid = self.info.room_uuid.clone();
                out.deliver(
                    self.audience(None),
                    Event::MemberJoinChatroom { room_uuid, members: vec![member] },
                );
            } else {
                let privileged = self.member(caller.user()).is_some_and(|m| m.privileged);
                self.presence.record(now, Change::EnteredChatroom, &member, privileged);
            }
        } // else already inside: success, no second event
        let read = HistoryRead::new(
            HistoryRequest::JoinChatroom,
            Some(caller.user().clone()),
            Start::Newest,
            history_count.unwrap_or(0) as usize,
            None,
            self.chat()?.last_seq(),
            config.history_scan_limit,
        )?;
        out.history(caller.conn, request_id, &self.info.room_uuid, read);
        Ok(())
    }

    /// `leave_chatroom`, announced to the others.
    pub(crate) fn leave_chatroom(
        &mut self,
        now: u64,
        caller: Caller<'_>,
        out: &mut Outputs,
    ) -> Result<(), Error> {
        self.member_on(caller.conn, caller.user())?;
        self.chat()?;
        let Some(member) = self.exit_chatroom(caller.user(), out) else {
            return Err(Error::NotInChatroom(self.info.room_uuid.clone()));
        };
        if self.presence.per_member() {
            let room_uuid = self.info.room_uuid.clone();
            out.deliver(
                self.audience(Some(caller.conn)),
                Event::MemberLeaveChatroom { room_uuid, members: vec![member] },
            );
        } else {
            let privileged = self.member(caller.user()).is_some_and(|m| m.privileged);
            self.presence.record(now, Change::LeftChatroom, &member, privileged);
        }
        Ok(())
    }

    /// A member's message, to the whole chatroom but the sender, or to the listed members. A
    /// retry (an id this sender used before) answers the stored message and delivers nothing.
    /// An ephemeral message is delivered without being stored or numbered.
    pub(crate) fn send(
        &mut self,
        now: u64,
        config: &CoreConfig,
        caller: Caller<'_>,
        send: Send,
        out: &mut Outputs,
    ) -> Result<SendMessageOutput, Error> {
        let sender = self.member_on(caller.conn, caller.user())?;
        let (from_nick, from_avatar) = (sender.info.name.clone(), sender.info.avatar.clone());
        let priority = if !send.persist {
            Priority::Low
        } else if sender.info.role == Role::Host || caller.identity.grants.room_admin {
            Priority::High
        } else {
            Priority::Normal
        };
        self.chat()?;
        if !self.is_in_chatroom(caller.user()) {
            return Err(Error::NotInChatroom(self.info.room_uuid.clone()));
        }
        check_body(&send.body, config.max_message_bytes)?;
        // Directed messages: every recipient must be in the chatroom.
        let to = send.to.map(|list| check_recipients(list, config.max_recipients)).transpose()?;
        if let Some(missing) = to.iter().flatten().find(|u| !self.is_in_chatroom(u)) {
            return Err(Error::MemberNotFound(missing.clone()));
        }
        let audience = self.send_audience(caller.conn, to.as_deref())?;
        let chat = self.chat()?;
        let earlier = send.message_uuid.as_ref().filter(|_| send.persist).and_then(|id| {
            let recent = chat.find_recent(id)?;
            Some((id, recent, chat.content_hash(&send.body, to.as_deref())))
        });
        if let Some((id, earlier, content)) = earlier {
            // A retry: the message is stored already, or its commit is in flight (the answer
            // then fails with it); answer as the first time, deliver nothing again.
            if earlier.from != *caller.user() {
                return Err(Error::bad("message_uuid", "already used by another sender"));
            }
            let message = earlier.retried(id, content, send.body).ok_or_else(|| {
                Error::bad("message_uuid", "already used for a message with other content or recipients")
            })?;
            return Ok(SendMessageOutput { message, durable: config.durable_acks });
        }
        self.take_rate(now, caller.user(), priority)?;
        let draft = Draft {
            id: send.message_uuid,
            id_prefix: 's',
            from: caller.user().clone(),
            from_nick,
            from_avatar,
            from_backend: false,
            to,
            body: send.body,
            priority,
        };
        let chat = self.chat_mut()?;
        let durable = send.persist && config.durable_acks;
        let message = if send.persist {
            let message = chat.accept(now, draft);
            out.message(&self.info.room_uuid, &message, audience);
            message
        } else {
            let message = chat.accept_ephemeral(now, draft);
            let room_uuid = self.info.room_uuid.clone();
            out.deliver(
                audience,
                Event::ChatroomMessagesReceived { room_uuid, messages: vec![message.clone()] },
            );
            message
        };
        Ok(SendMessageOutput { message, durable })
    }

    /// Who receives a member's message: the listed members, or the whole chatroom, never the
    /// sender.
    fn send_audience(&self, sender: ConnId, to: Option<&[UserUuid]>) -> Result<Audience, Error> {
        Ok(match to {
            Some(list) => Audience::only(
                list.iter().filter_map(|u| self.member(u)).map(|m| m.conn).filter(|c| *c != sender).collect(),
            ),
            None => self.chat()?.roster.audience(Some(sender)),
        })
    }

    /// Spends one message of `user`'s rate and of the chatroom's cap, or refuses: over the
    /// member's rate with `MESSAGE_RATE_LIMITED`; over the chatroom's cap with
    /// `CHATROOM_RATE_LIMITED`, a low-priority message once half its burst is used, a normal
    /// one once all of it is, a high-priority one never.
    fn take_rate(&mut self, now: u64, user: &UserUuid, priority: Priority) -> Result<(), Error> {
        let room_uuid = self.info.room_uuid.clone();
        let member_rate = self.member_rate;
        let (Some(chat), Some(member)) = (self.chatroom.as_mut(), self.members.get_mut(user)) else {
            return Err(Error::NotInChatroom(room_uuid));
        };
        if !member.sending(member_rate).allows(now, 0) {
            return Err(member_rate_limited(member_rate));
        }
        let fits = match priority {
            Priority::Low => chat.rate.allows(now, 50),
            Priority::Normal => chat.rate.allows(now, 0),
            Priority::High => true,
        };
        if !fits {
            return Err(Error::ChatroomRateLimited(room_uuid));
        }
        member.sending(member_rate).take(now);
        chat.rate.take(now);
        Ok(())
    }

    /// Spends one message of `user`'s own rate only (a recall), or refuses.
    fn take_member_rate(&mut self, now: u64, user: &UserUuid) -> Result<(), Error> {
        let rate = self.member_rate;
        let member =
            self.members.get_mut(user).ok_or_else(|| Error::NotInRoom(self.info.room_uuid.clone()))?;
        let sending = member.sending(rate);
        if !sending.allows(now, 0) {
            return Err(member_rate_limited(rate));
        }
        sending.take(now);
        Ok(())
    }

    /// A text message from the application's backend to every chatroom member, with
    /// `from_backend` set. Same text limits as members'.
    pub(crate) fn send_backend(
        &mut self,
        now: u64,
        config: &CoreConfig,
        from: UserUuid,
        from_nick: String,
        text: String,
        out: &mut Outputs,
    ) -> Result<SharedMessage, Error> {
        let chat = self.chat_mut()?;
        let body = MessageBody::Text { text };
        check_body(&body, config.max_message_bytes)?;
        let draft = Draft {
            id: None,
            id_prefix: 'b',
            from,
            from_nick,
            from_avatar: None,
            from_backend: true,
            to: None,
            body,
            priority: Priority::High,
        };
        chat.rate.take(now); // counts against the cap, never refused
        let message = chat.accept(now, draft);
        let audience = chat.roster.audience(None);
        out.message(&self.info.room_uuid, &message, audience);
        Ok(message)
    }

    /// `recall_chatroom_message`: the sender within the recall window, the host at any time.
    /// A broadcast's recall goes to the whole chatroom; a directed message's only to its
    /// parties in the chatroom. The recaller is always told, in the chatroom or not.
    pub(crate) fn recall(
        &mut self,
        now: u64,
        config: &CoreConfig,
        caller: Caller<'_>,
        message_uuid: &MessageUuid,
        out: &mut Outputs,
    ) -> Result<RecallOutput, Error> {
        let recaller = self.member_on(caller.conn, caller.user())?;
        let is_host = recaller.info.role == Role::Host || caller.identity.grants.room_admin;
        let nick = recaller.info.name.clone();
        let own = |m: &Recent| m.from == *caller.user();
        // A directed message the caller could not see is answered as if it did not exist:
        // any other answer would tell a non-party that a private message has this id.
        let visible =
            |m: &Recent| is_host || own(m) || m.to.as_ref().is_none_or(|to| to.contains(caller.user()));
        let original = self
            .chat()?
            .find_recent(message_uuid)
            .filter(|m| !m.is_notification() && visible(m))
            .cloned()
            .ok_or_else(|| Error::MessageNotFound(message_uuid.clone()))?;
        if out.unreported(&self.info.room_uuid, original.seq) {
            return Err(Error::NotStoredYet(message_uuid.clone()));
        }
        if original.recalled {
            return Err(Error::bad("message_uuid", "the message is already recalled"));
        }
        let own = own(&original);
        if !(is_host || (own && now.saturating_sub(original.time) <= config.recall_window_ms)) {
            return Err(Error::Forbidden(if own {
                "the recall window for this message has passed"
            } else {
                "only the sender or the host may recall a message"
            }));
        }
        // A directed message's recall is news only to those who could see it.
        let parties = original.to.as_ref().map(|to| {
            let mut parties = to.clone();
            if !parties.contains(&original.from) {
                parties.push(original.from.clone());
            }
            parties
        });
        let audience = self.recall_audience(caller, parties.as_deref());
        let draft = Draft {
            id: None,
            id_prefix: 'r',
            from: caller.user().clone(),
            from_nick: nick,
            from_avatar: None,
            from_backend: false,
            to: parties,
            body: MessageBody::Notification {
                event_type: NotificationType::MessageRecall,
                operate_by: Some(caller.user().clone()),
                recalled_message_id: Some(message_uuid.clone()),
            },
            priority: Priority::High,
        };
        if !is_host {
            // A member's recall is a broadcast like a send: it spends the member's rate.
            self.take_member_rate(now, caller.user())?;
        }
        let chat = self.chat_mut()?;
        chat.rate.take(now); // counts against the cap, never refused
        let notification = chat.accept(now, draft);
        let recalled = original.recalled_form(message_uuid);
        chat.mark_recalled(message_uuid);
        out.store(StoreOp::Append { room: self.info.room_uuid.clone(), message: recalled });
        out.message(&self.info.room_uuid, &notification, audience);
        Ok(RecallOutput { message: notification })
    }

    /// The chatroom members among `parties` (everyone for a broadcast), and the recaller.
    fn recall_audience(&self, caller: Caller<'_>, parties: Option<&[UserUuid]>) -> Audience {
        let Some(chat) = self.chatroom.as_ref() else { return Audience::only(vec![caller.conn]) };
        let mut conns: Vec<ConnId> = match parties {
            None if self.is_in_chatroom(caller.user()) => return chat.roster.audience(None),
            None => chat.roster.audience(None).iter().collect(),
            Some(parties) => parties
                .iter()
                .filter(|u| self.is_in_chatroom(u))
                .filter_map(|u| self.member(u))
                .map(|m| m.conn)
                .collect(),
        };
        if !conns.contains(&caller.conn) {
            conns.push(caller.conn);
        }
        Audience::only(conns)
    }

    /// `fetch_chatroom_history`: a query for the store, visible to the caller.
    pub(crate) fn fetch_history(
        &self,
        config: &CoreConfig,
        caller: Caller<'_>,
        request_id: u64,
        p: FetchChatroomHistory,
        out: &mut Outputs,
    ) -> Result<(), Error> {
        self.member_on(caller.conn, caller.user())?;
        self.chat()?;
        let limit = p.limit.unwrap_or(MAX_HISTORY_LIMIT);
        if limit == 0 || limit > MAX_HISTORY_LIMIT {
            return Err(Error::bad("limit", format!("must be 1 to {MAX_HISTORY_LIMIT}")));
        }
        let start = match p.after_seq {
            Some(after) => Start::AfterSeq(after),
            None => Start::Time { start_time: p.start_time, order: p.order },
        };
        let read = HistoryRead::new(
            HistoryRequest::FetchChatroomHistory,
            Some(caller.user().clone()),
            start,
            limit as usize,
            p.cursor.as_deref(),
            self.chat()?.last_seq(),
            config.history_scan_limit,
        )?;
        out.history(caller.conn, request_id, &p.room_uuid, read);
        Ok(())
    }
}

fn member_rate_limited(rate: crate::config::MessageRate) -> Error {
    Error::MessageRateLimited { per_second: rate.per_second, burst: rate.burst }
}
