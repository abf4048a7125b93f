//! `roomkit chat`: an interactive chatroom session on standard input and output.

use std::{io::BufRead, time::Duration};

use roomkit_client::{ChatController, ConnectionState, EndReason, RoomContext, RoomEvent, RoomKit};
use roomkit_protocol::{Code, Role, RoomUuid, UserUuid};
use tokio::sync::mpsc;

use crate::{connect, create, join, print, recent, ChatArgs, Failure};

const HELP: &str = "\
commands:
  TEXT              send TEXT to everyone in the chatroom (//TEXT sends a line starting with /)
  /dm USER TEXT     send TEXT to one member only (USER: a user uuid or display name)
  /members          list the room's members and who is in the chatroom
  /history [N]      print the last N messages (default 20)
  /recall [ID]      recall your last message, or the message ID (the host may recall any)
  /leave            leave the chatroom but stay in the room (/join enters it again)
  /join             enter the chatroom again
  /quit             leave the room and exit (so does end of input)";

enum Flow {
    Continue,
    Quit,
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
    members(&room, &me);
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
    let mut last_sent: Option<String> = None;
    loop {
        tokio::select! {
            line = lines.recv() => {
                let Some(line) = line else {
                    // End of input: leave like /quit.
                    room.leave_room().await?;
                    return Ok(());
                };
                let line = line.trim_end_matches(['\r', '\n']);
                if let Flow::Quit = command(line, &room, &chat, &me, &mut last_sent).await? {
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
                ConnectionState::Connected => println!("* connected again"),
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

fn members(room: &RoomContext, me: &UserUuid) {
    let mut all = room.remote_members();
    all.push(room.local_member());
    all.sort_by(|a, b| (a.role != Role::Host, &a.name).cmp(&(b.role != Role::Host, &b.name)));
    let chatting = all.iter().filter(|m| m.is_in_chatroom).count();
    let plural = if all.len() == 1 { "" } else { "s" };
    println!("* {} member{plural}, {chatting} in the chatroom:", all.len());
    for m in &all {
        println!("{}", print::member(m, me));
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
    last_sent: &mut Option<String>,
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
            Ok(m) => *last_sent = Some(m.message_uuid.to_string()),
            Err(e) => eprintln!("roomkit: {}", Failure::from(e)),
        }
        return Ok(Flow::Continue);
    }
    let rest = &line[1..];
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    match name {
        "help" | "?" => println!("{HELP}"),
        "dm" | "msg" => {
            let Some((user, text)) = args.split_once(char::is_whitespace) else {
                eprintln!("usage: /dm USER TEXT");
                return Ok(Flow::Continue);
            };
            match find_member(room, user) {
                Some(to) => match chat.send_direct_text_message(to.as_str(), text.trim()).await {
                    Ok(m) => {
                        println!("{}", print::message(&m, me, |u| name_of(room, u)));
                        *last_sent = Some(m.message_uuid.to_string());
                    }
                    Err(e) => eprintln!("roomkit: {}", Failure::from(e)),
                },
                None => eprintln!("roomkit: no member `{}` in the room (see /members)", print::clean(user)),
            }
        }
        "members" | "who" => members(room, me),
        "history" => {
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
        "recall" => match (args, last_sent.as_deref()) {
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

/// A member by user uuid, or else by display name (ignoring case).
fn find_member(room: &RoomContext, user: &str) -> Option<UserUuid> {
    if let Some(m) = room.get_member(user) {
        return Some(m.uuid);
    }
    let mut all = room.remote_members();
    all.push(room.local_member());
    let mut by_name = all.into_iter().filter(|m| m.name.eq_ignore_ascii_case(user));
    match (by_name.next(), by_name.next()) {
        (Some(m), None) => Some(m.uuid),
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
