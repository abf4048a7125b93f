//! `roomkit chat`: an interactive chatroom session on standard input and output.

use std::{io::BufRead, time::Duration};

use roomkit_client::{
    ChatController, ConnectionState, CustomMessageOptions, EndReason, MemberCounts, RoomContext, RoomEvent,
    RoomKit,
};
use roomkit_protocol::{Code, Role, RoomUuid, UserUuid};
use tokio::sync::mpsc;

use crate::{connect, create, join, print, recent, ChatArgs, Failure};

const HELP: &str = "\
commands:
  TEXT              send TEXT to everyone in the chatroom (//TEXT sends a line starting with /)
  /dm USER TEXT     send TEXT to one member only (USER: a user uuid or display name)
  /members          the online counts and the first page of members (who is in the chatroom)
  /members more     the next page of members, in a large room
  /like             send a like: delivered now, never stored or in history
  /history [N]      print the last N messages (default 20)
  /recall [ID]      recall your last message, or the message ID (the host may recall any)
  /leave            leave the chatroom but stay in the room (/join enters it again)
  /join             enter the chatroom again
  /quit             leave the room and exit (so does end of input)";

/// Members listed per page of `/members`.
const MEMBER_PAGE: u32 = 20;

/// The payload `/like` sends.
pub(crate) const LIKE: &str = r#"{"type":"like"}"#;

enum Flow {
    Continue,
    Quit,
}

/// What the session remembers between commands.
#[derive(Default)]
struct Local {
    /// The id of the last message sent, for `/recall`.
    last_sent: Option<String>,
    /// Where `/members more` continues, if there is more.
    members_cursor: Option<String>,
}

pub(crate) async fn run(args: ChatArgs) -> Result<(), Failure> {
    let (kit, account) = connect(&args.login, Some(&args.name)).await?;
    let result = session(&kit, &account, &args).await;
    kit.close().await;
    result
}

async fn session(kit: &RoomKit, account: &str, args: &ChatArgs) -> Result<(), Failure> {
    let password = args.login.password.as_deref();
    RoomUuid::new(&args.room)
        .map_err(|e| Failure::new(Code::BAD_REQUEST, format!("--room `{}`: {e}", args.room)))?;
    if args.login.server.len() > 1 {
        println!("* connected to {}", kit.server_url());
    }
    let mut role = Role::Member;
    if args.create {
        let room_name = args.room_name.clone().unwrap_or_else(|| args.room.clone());
        if create(kit, &args.room, &room_name, password).await? {
            println!("* created room {} with a chatroom", args.room);
            role = Role::Host;
        } else {
            println!("* room {} already exists: joining it", args.room);
        }
    }
    let room = join(kit, &args.room, &args.name, password, role).await?;
    let mut events = room.events();
    let chat = room.chat_controller();
    if !chat.is_supported() {
        let _ = room.leave_room().await;
        return Err(Failure::new(
            Code::CHATROOM_NOT_ENABLED,
            format!("room `{}` has no chatroom (it was created without one)", args.room),
        ));
    }
    chat.join_chatroom().await?;
    let me = UserUuid::new(account).expect("checked at login");
    println!(
        "* joined room {} ({}) as {} [{}]; /help lists the commands",
        args.room,
        print::clean(&room.room_name()),
        print::clean(&args.name),
        account
    );
    joined_members(&room, &me);
    if args.recent > 0 {
        let messages = recent(&chat, args.recent).await?;
        if !messages.is_empty() {
            println!("* recent messages:");
            for m in &messages {
                println!("{}", print::message(m, &me, |u| name_of(&room, u)));
            }
        }
    }

    let mut lines = stdin_lines();
    let mut connection = kit.connection_events();
    let mut watchdog = tokio::time::interval(Duration::from_millis(250));
    let mut local = Local::default();
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else {
                    // End of input: leave like /quit.
                    room.leave_room().await?;
                    return Ok(());
                };
                let line = line.trim_end_matches(['\r', '\n']);
                if let Flow::Quit = command(line, &room, &chat, &me, &mut local).await? {
                    return Ok(());
                }
            }
            event = events.recv() => match event {
                Some(RoomEvent::RoomEnd(reason)) => return ended(reason),
                Some(event) => show(event, &room, &me),
                None => return Err(Failure::new(Code::ROOM_ENDED, "the room ended")),
            },
            Some(state) = connection.recv() => match state {
                ConnectionState::Reconnecting { attempt } => {
                    println!("* connection lost: reconnecting (attempt {attempt})")
                }
                ConnectionState::Connected => println!("* connected again, to {}", kit.server_url()),
                ConnectionState::Disconnected { code, msg } => return Err(Failure::new(code, msg)),
            },
            _ = watchdog.tick() => {
                if let Some(e) = kit.close_reason() {
                    return Err(e.into());
                }
            }
        }
    }
}

/// Lines of standard input, read on a plain thread (a blocking read cannot be cancelled, and
/// must not hold up the exit).
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn ended(reason: EndReason) -> Result<(), Failure> {
    let why = match reason {
        EndReason::LeaveBySelf => return Ok(()),
        EndReason::CloseByMember => "the host ended it",
        EndReason::CloseByBackend => "the server's operator ended it",
        EndReason::KickedByOtherDevice => "the same account joined it from somewhere else",
        EndReason::ServerShutdown => "the server is shutting down",
        EndReason::KickOut => "you were removed",
        _ => "it ended",
    };
    println!("* the room ended: {why}");
    Err(Failure::new(Code::ROOM_ENDED, format!("the room ended: {why}")))
}

fn name_of(room: &RoomContext, user: &UserUuid) -> String {
    room.get_member(user.as_str()).map_or_else(|| user.to_string(), |m| m.name)
}

/// `N members, M in the chatroom`.
fn counted(counts: MemberCounts) -> String {
    let plural = if counts.room == 1 { "" } else { "s" };
    format!("{} member{plural}, {} in the chatroom", counts.room, counts.chatroom)
}

/// On joining: the counts, and the members the join answer showed (every one in a small
/// room; the host and a first page in a large one).
fn joined_members(room: &RoomContext, me: &UserUuid) {
    let mut seen = room.remote_members();
    seen.push(room.local_member());
    seen.sort_by(|a, b| (a.role != Role::Host, &a.name).cmp(&(b.role != Role::Host, &b.name)));
    let counts = room.member_counts();
    println!("* {}:", counted(counts));
    for m in seen.iter().take(MEMBER_PAGE as usize) {
        println!("{}", print::member(m, me));
    }
    if counts.room > seen.len().min(MEMBER_PAGE as usize) as u64 {
        println!("* /members lists them page by page");
    }
}

/// `/members` (first page) and `/members more` (the next one).
async fn members_page(room: &RoomContext, me: &UserUuid, local: &mut Local, more: bool) {
    if more && local.members_cursor.is_none() {
        println!("* no more members: /members starts again from the first");
        return;
    }
    let cursor = if more { local.members_cursor.take() } else { None };
    match room.fetch_room_members(cursor.as_deref(), MEMBER_PAGE).await {
        Ok(page) => {
            if !more {
                println!("* {}:", counted(page.counts));
            }
            for m in &page.members {
                println!("{}", print::member(m, me));
            }
            if page.next_cursor.is_some() {
                println!("* more members: /members more");
            }
            local.members_cursor = page.next_cursor;
        }
        Err(e) => {
            local.members_cursor = cursor;
            eprintln!("roomkit: {}", Failure::from(e));
        }
    }
}

fn show(event: RoomEvent, room: &RoomContext, me: &UserUuid) {
    let who = |members: &[roomkit_client::RoomMember]| {
        if members.len() == 1 && &members[0].uuid == me {
            "you".to_string()
        } else {
            print::names(members)
        }
    };
    match event {
        RoomEvent::MemberJoinRoom(m) => println!("* {} joined the room", who(&m)),
        RoomEvent::MemberLeaveRoom(m) => println!("* {} left the room", who(&m)),
        RoomEvent::MemberJoinChatroom(m) => println!("* {} entered the chatroom", who(&m)),
        RoomEvent::MemberLeaveChatroom(m) => println!("* {} left the chatroom", who(&m)),
        RoomEvent::MemberCountChanged(counts) => println!("* online: {}", counted(counts)),
        RoomEvent::ChatroomMessagesReceived(messages) => {
            for m in &messages {
                println!("{}", print::message(m, me, |u| name_of(room, u)));
            }
        }
        RoomEvent::RoomLockStateChanged(locked) => {
            println!("* the room was {}", if locked { "locked" } else { "unlocked" })
        }
        RoomEvent::RoomPropertiesChanged(p) => {
            let keys: Vec<&str> = p.keys().map(String::as_str).collect();
            println!("* room properties changed: {}", print::clean(&keys.join(", ")));
        }
        RoomEvent::RoomPropertiesDeleted(keys) => {
            println!("* room properties deleted: {}", print::clean(&keys.join(", ")))
        }
        RoomEvent::Resumed { recovered: true } => println!("* back in the room; missed messages above"),
        RoomEvent::Resumed { recovered: false } => {
            println!("* back in the room; some missed messages are no longer kept (see /history)")
        }
        _ => {}
    }
}

/// Runs one input line. Call failures are reported and the session goes on.
async fn command(
    line: &str,
    room: &RoomContext,
    chat: &ChatController,
    me: &UserUuid,
    local: &mut Local,
) -> Result<Flow, Failure> {
    if line.trim().is_empty() {
        return Ok(Flow::Continue);
    }
    let text = match line.strip_prefix('/') {
        None => Some(line),
        Some(rest) if rest.starts_with('/') => Some(rest),
        Some(_) => None,
    };
    if let Some(text) = text {
        match chat.send_broadcast_text_message(text).await {
            Ok(m) => local.last_sent = Some(m.message_uuid.to_string()),
            Err(e) => eprintln!("roomkit: {}", Failure::from(e)),
        }
        return Ok(Flow::Continue);
    }
    let rest = &line[1..];
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    match name {
        "help" | "?" => println!("{HELP}"),
        "dm" | "msg" => direct(args, room, chat, me, local).await,
        "members" | "who" => match args {
            "" => members_page(room, me, local, false).await,
            "more" | "next" => members_page(room, me, local, true).await,
            _ => eprintln!("usage: /members [more]"),
        },
        "like" => {
            let ephemeral = CustomMessageOptions { persist: false, ..Default::default() };
            if report(chat.send_custom_message(LIKE, ephemeral).await) {
                println!("* you sent a like");
            }
        }
        "history" => history(args, room, chat, me).await,
        "recall" => match (args, local.last_sent.as_deref()) {
            ("", None) => eprintln!("roomkit: nothing to recall yet: /recall ID names a message"),
            (id, last) => {
                let id = if id.is_empty() { last.unwrap_or_default() } else { id };
                // Everyone in the chatroom, the caller included, is told by a notification.
                report(chat.recall_chatroom_message(id).await);
            }
        },
        "leave" => {
            if report(chat.leave_chatroom().await) {
                println!("* you left the chatroom (/join enters it again, /quit leaves the room)");
            }
        }
        "join" => {
            report(chat.join_chatroom().await);
        }
        "quit" | "exit" => {
            room.leave_room().await?;
            println!("* you left the room");
            return Ok(Flow::Quit);
        }
        other => eprintln!("roomkit: unknown command /{}: /help lists the commands", print::clean(other)),
    }
    Ok(Flow::Continue)
}

/// `/dm USER TEXT`.
async fn direct(args: &str, room: &RoomContext, chat: &ChatController, me: &UserUuid, local: &mut Local) {
    let Some((user, text)) = args.split_once(char::is_whitespace) else {
        eprintln!("usage: /dm USER TEXT");
        return;
    };
    match find_member(room, user) {
        Some(to) => match chat.send_direct_text_message(to.as_str(), text.trim()).await {
            Ok(m) => {
                println!("{}", print::message(&m, me, |u| name_of(room, u)));
                local.last_sent = Some(m.message_uuid.to_string());
            }
            Err(e) => eprintln!("roomkit: {}", Failure::from(e)),
        },
        None => eprintln!("roomkit: no member `{}` in the room (see /members)", print::clean(user)),
    }
}

/// `/history [N]`.
async fn history(args: &str, room: &RoomContext, chat: &ChatController, me: &UserUuid) {
    let limit = if args.is_empty() { Ok(20) } else { args.parse::<u32>() };
    match limit {
        Ok(limit @ 1..=100) => match recent(chat, limit).await {
            Ok(messages) if messages.is_empty() => println!("* no messages yet"),
            Ok(messages) => {
                for m in &messages {
                    println!("{}", print::message(m, me, |u| name_of(room, u)));
                }
            }
            Err(e) => eprintln!("roomkit: {e}"),
        },
        _ => eprintln!("usage: /history [N], N from 1 to 100"),
    }
}

/// A member by user uuid, or else by display name (ignoring case), among the members seen.
/// In a large room a member not seen yet is named by uuid: the server checks it.
fn find_member(room: &RoomContext, user: &str) -> Option<UserUuid> {
    if let Some(m) = room.get_member(user) {
        return Some(m.uuid);
    }
    let mut all = room.remote_members();
    all.push(room.local_member());
    let mut by_name = all.into_iter().filter(|m| m.name.eq_ignore_ascii_case(user));
    match (by_name.next(), by_name.next()) {
        (Some(m), None) => Some(m.uuid),
        (None, _) if room.online_count() > room.remote_members().len() as u64 + 1 => UserUuid::new(user).ok(),
        _ => None,
    }
}

/// Prints a failed call's code and message; true on success.
fn report<T>(result: Result<T, roomkit_client::Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(e) => {
            eprintln!("roomkit: {}", Failure::from(e));
            false
        }
    }
}
