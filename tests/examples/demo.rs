//! An in-process demo: a roomkit server and three members over the in-memory transport,
//! printing what each member sees.
//!
//! Run it with `cargo xtask run` (or `cargo run -p roomkit-tests --example demo`).

use std::{sync::Arc, time::Duration};

use roomkit_client::{
    CreateRoomOptions, CreateRoomParams, JoinRoomOptions, JoinRoomParams, RoomEvent, RoomKit,
};
use roomkit_protocol::Role;
use roomkit_server::{DevAuthenticator, Server, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), roomkit_client::Error> {
    let (listener, connector) = roomkit_transport_memory::transport();
    let server = Server::new(ServerConfig::default(), Arc::new(DevAuthenticator)).spawn(listener);
    println!("roomkit demo: one server, three members, in-memory transport\n");

    let mut members = Vec::new();
    for (account, name) in [("teacher", "Ms. Lin"), ("ann", "Ann"), ("bo", "Bo")] {
        let kit = RoomKit::connect(connector.clone()).await?;
        kit.login(account, "dev-token").await?;
        members.push((name, kit));
    }

    let params = CreateRoomParams {
        room_uuid: "class-101".into(),
        room_name: "Class 101".into(),
        ..Default::default()
    };
    members[0].1.room_service().create_room(params, CreateRoomOptions { enable_chatroom: true }).await?;
    println!("Ms. Lin created room class-101 with a chatroom");

    let mut printers = Vec::new();
    let mut contexts = Vec::new();
    for (name, kit) in &members {
        let role = if *name == "Ms. Lin" { Role::Host } else { Role::Member };
        let join = JoinRoomParams {
            room_uuid: "class-101".into(),
            user_name: (*name).into(),
            role,
            ..Default::default()
        };
        let context = kit.room_service().join_room(join, JoinRoomOptions::default()).await?;
        let mut events = context.events();
        let who = *name;
        printers.push(tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                println!("  [{who:>7} sees] {}", describe(&event));
            }
        }));
        contexts.push(context);
    }

    for context in &contexts {
        context.chat_controller().join_chatroom().await?;
    }
    let chat = |i: usize| contexts[i].chat_controller();
    chat(0).send_broadcast_text_message("Good morning, class!").await?;
    chat(1).send_broadcast_text_message("Morning!").await?;
    chat(2).send_direct_text_message("teacher", "May I ask a question after class?").await?;
    chat(1).leave_chatroom().await?;
    chat(0).send_broadcast_text_message("Ann has stepped out; Bo, go ahead.").await?;
    contexts[0].end_room(false).await?;

    // Let the printers drain what is already queued.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for printer in printers {
        printer.abort();
    }
    server.shutdown().await;
    println!("\ndone");
    Ok(())
}

fn describe(event: &RoomEvent) -> String {
    let names = |members: &[roomkit_client::RoomMember]| {
        members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
    };
    match event {
        RoomEvent::MemberJoinRoom(m) => format!("{} joined the room", names(m)),
        RoomEvent::MemberLeaveRoom(m) => format!("{} left the room", names(m)),
        RoomEvent::MemberJoinChatroom(m) => format!("{} entered the chatroom", names(m)),
        RoomEvent::MemberLeaveChatroom(m) => format!("{} left the chatroom", names(m)),
        RoomEvent::ChatroomMessagesReceived(messages) => messages
            .iter()
            .map(|m| {
                let to = if m.to_user_uuid_list.is_some() { " (direct)" } else { "" };
                format!("#{} {}{to}: {}", m.seq, m.from_nick, m.text().unwrap_or("<custom>"))
            })
            .collect::<Vec<_>>()
            .join("; "),
        RoomEvent::RoomEnd(reason) => format!("room ended ({reason:?})"),
        other => format!("{other:?}"),
    }
}
