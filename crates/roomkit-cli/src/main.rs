//! `roomkit`: a terminal client for a roomkit server, built on the `roomkit-client` SDK.
//!
//! ```text
//! roomkit chat    --server ws://127.0.0.1:7700/v1 --room demo --name Alice --create
//! roomkit chat    --server ws://10.0.0.1:7700/v1,ws://10.0.0.2:7700/v1 --room demo --name Bob
//! roomkit send    --server ws://127.0.0.1:7700/v1 --room demo --text "hello"
//! roomkit history --server ws://127.0.0.1:7700/v1 --room demo
//! roomkit rooms   --admin http://127.0.0.1:7701 --admin-key KEY
//! roomkit token   --secret SECRET --account alice --ttl 1h
//! ```
//!
//! Failures print the protocol's code and message and exit with status 1.

mod admin_http;
mod chat;
mod print;

use std::{process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use roomkit_client::{
    ChatController, CreateRoomOptions, CreateRoomParams, FetchHistoryOptions, JoinRoomOptions,
    JoinRoomParams, RoomContext, RoomKit,
};
use roomkit_protocol::{Code, Role, RoomUuid, UserUuid};
use roomkit_token::{JwtAuthenticator, TokenField, TokenRequest};

#[derive(Debug, Parser)]
#[command(name = "roomkit", version, about = "roomkit in a terminal: chat, send, history, rooms, tokens")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Chat in a room's chatroom: lines from standard input are sent, messages and notices are
    /// printed (times in UTC). Type /help for the commands.
    Chat(ChatArgs),
    /// Send one text message to a room's chatroom.
    Send(SendArgs),
    /// Print a room's recent chatroom messages, oldest first.
    History(HistoryArgs),
    /// List the server's live rooms, through the admin API.
    Rooms(RoomsArgs),
    /// Mint an access token with the server's token secret.
    Token(TokenArgs),
}

/// Where to connect and who to be.
#[derive(Debug, Args)]
struct Login {
    /// The server's WebSocket URL. Several (comma-separated, or the flag repeated) are the
    /// nodes of a cluster: tried in turn, and the connection fails over to the next when its
    /// node goes away.
    #[arg(long, env = "ROOMKIT_SERVER", value_delimiter = ',', default_value = "ws://127.0.0.1:7700/v1")]
    server: Vec<String>,
    /// Access token. Without one, a development token is used: only a server started with
    /// --dev accepts it.
    #[arg(long, env = "ROOMKIT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Account id to log in as (the token's subject) [default: made from --name].
    #[arg(long)]
    account: Option<String>,
    /// The room's password, if it has one.
    #[arg(long)]
    password: Option<String>,
}

#[derive(Debug, Args)]
struct ChatArgs {
    #[command(flatten)]
    login: Login,
    /// The room's uuid.
    #[arg(long)]
    room: String,
    /// Your display name in the room.
    #[arg(long)]
    name: String,
    /// Create the room (with a chatroom) first, unless it exists; you join it as host.
    #[arg(long)]
    create: bool,
    /// The new room's name, with --create [default: the room's uuid].
    #[arg(long, requires = "create")]
    room_name: Option<String>,
    /// Recent messages to print on entering the chatroom.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100))]
    recent: u32,
}

#[derive(Debug, Args)]
struct SendArgs {
    #[command(flatten)]
    login: Login,
    /// The room's uuid.
    #[arg(long)]
    room: String,
    /// The message.
    #[arg(long)]
    text: String,
    /// Send only to this member (a user uuid); repeat for several.
    #[arg(long = "to")]
    to: Vec<String>,
    /// Display name in the room [default: the account id].
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    #[command(flatten)]
    login: Login,
    /// The room's uuid.
    #[arg(long)]
    room: String,
    /// At most this many messages (1–100).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100))]
    limit: u32,
    /// Display name in the room [default: the account id].
    #[arg(long)]
    name: Option<String>,
}

#[derive(Debug, Args)]
struct RoomsArgs {
    /// The admin API's base URL (http only).
    #[arg(long, env = "ROOMKIT_ADMIN_URL", default_value = "http://127.0.0.1:7701")]
    admin: String,
    /// The admin API's bearer key.
    #[arg(long, env = "ROOMKIT_ADMIN_KEY", hide_env_values = true)]
    admin_key: String,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// The server's token secret.
    #[arg(long, env = "ROOMKIT_TOKEN_SECRET", hide_env_values = true)]
    secret: String,
    /// The account id the token is for.
    #[arg(long)]
    account: String,
    /// Display name [default: the account id].
    #[arg(long)]
    name: Option<String>,
    /// Lifetime, e.g. `90s`, `30m`, `1h`, `7d`.
    #[arg(long, default_value = "1h", value_parser = roomkit_token::parse_duration)]
    ttl: Duration,
    /// A room the token may join (repeat for more); none means every room.
    #[arg(long = "room")]
    rooms: Vec<String>,
    /// Grant room admin (host rights in every room).
    #[arg(long)]
    admin: bool,
    /// Do not grant creating rooms.
    #[arg(long)]
    no_create: bool,
}

/// Why a command failed: a protocol code (when there is one) and a message.
#[derive(Debug)]
pub(crate) struct Failure {
    code: Option<Code>,
    msg: String,
}

impl Failure {
    pub(crate) fn new(code: Code, msg: impl Into<String>) -> Self {
        Self { code: Some(code), msg: msg.into() }
    }

    pub(crate) fn plain(msg: impl Into<String>) -> Self {
        Self { code: None, msg: msg.into() }
    }
}

impl From<roomkit_client::Error> for Failure {
    fn from(e: roomkit_client::Error) -> Self {
        Self::new(e.code(), e.msg())
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "error {} {}: {}", code.0, code.name(), self.msg),
            None => write!(f, "error: {}", self.msg),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Token(args) => token(args),
        command => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(async move {
                match command {
                    Command::Chat(args) => chat::run(args).await,
                    Command::Send(args) => send(args).await,
                    Command::History(args) => history(args).await,
                    Command::Rooms(args) => rooms(args).await,
                    Command::Token(_) => unreachable!("handled above"),
                }
            }),
            Err(e) => Err(Failure::plain(format!("starting the runtime: {e}"))),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("roomkit: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// An account id made from a display name: the characters ids allow, lower-cased.
fn account_from_name(name: &str) -> Option<String> {
    let id: String = name
        .trim()
        .chars()
        .map(|c| if c.is_whitespace() { '-' } else { c.to_ascii_lowercase() })
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
        .take(roomkit_protocol::MAX_ID_LEN)
        .collect();
    (!id.is_empty()).then_some(id)
}

fn random_account() -> String {
    format!("cli-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

/// Connects and logs in. Returns the client and the account it logged in as.
async fn connect(login: &Login, name: Option<&str>) -> Result<(RoomKit, String), Failure> {
    let account = match (&login.account, name.and_then(account_from_name)) {
        (Some(account), _) => account.clone(),
        (None, Some(account)) => account,
        (None, None) => random_account(),
    };
    UserUuid::new(&account)
        .map_err(|e| Failure::new(Code::BAD_REQUEST, format!("--account `{account}`: {e}")))?;
    let token = match &login.token {
        Some(token) => token.clone(),
        None => {
            eprintln!(
                "roomkit: no --token: using a development token for `{account}` \
                 (only a server started with --dev accepts it)"
            );
            "dev-token".to_string()
        }
    };
    let servers: Vec<&str> = login.server.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    let kit = RoomKit::connect(servers).await?;
    if let Err(e) = kit.login(&account, &token).await {
        let mut failure = Failure::from(e);
        if login.token.is_none() && failure.code == Some(Code::UNAUTHENTICATED) {
            failure.msg.push_str(
                " (this server wants a real token: pass --token, e.g. from `roomkit token --secret ... \
                 --account ...`)",
            );
        }
        return Err(failure);
    }
    Ok((kit, account))
}

async fn join(
    kit: &RoomKit,
    room: &str,
    name: &str,
    password: Option<&str>,
    role: Role,
) -> Result<RoomContext, Failure> {
    RoomUuid::new(room).map_err(|e| Failure::new(Code::BAD_REQUEST, format!("--room `{room}`: {e}")))?;
    let params = JoinRoomParams {
        room_uuid: room.into(),
        user_name: name.into(),
        role,
        password: password.map(Into::into),
        ..Default::default()
    };
    Ok(kit.room_service().join_room(params, JoinRoomOptions::default()).await?)
}

/// Creates `room` with a chatroom; `Ok(false)` when it already exists.
async fn create(kit: &RoomKit, room: &str, room_name: &str, password: Option<&str>) -> Result<bool, Failure> {
    let params = CreateRoomParams {
        room_uuid: room.into(),
        room_name: room_name.into(),
        password: password.map(Into::into),
        ..Default::default()
    };
    match kit.room_service().create_room(params, CreateRoomOptions { enable_chatroom: true }).await {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Code::ROOM_ALREADY_EXISTS => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Recent messages, oldest first.
async fn recent(chat: &ChatController, limit: u32) -> Result<Vec<roomkit_client::ChatMessage>, Failure> {
    let mut messages =
        chat.fetch_chatroom_history_messages(FetchHistoryOptions { limit, ..Default::default() }).await?;
    messages.reverse();
    Ok(messages)
}

async fn send(args: SendArgs) -> Result<(), Failure> {
    let (kit, account) = connect(&args.login, args.name.as_deref()).await?;
    let name = args.name.clone().unwrap_or_else(|| account.clone());
    let result = async {
        let room = join(&kit, &args.room, &name, args.login.password.as_deref(), Role::Member).await?;
        let chat = room.chat_controller();
        chat.join_chatroom().await?;
        let message = if args.to.is_empty() {
            chat.send_broadcast_text_message(&args.text).await?
        } else {
            let to: Vec<&str> = args.to.iter().map(String::as_str).collect();
            chat.send_group_text_message(&to, &args.text).await?
        };
        println!("sent #{} ({}) to room {}", message.seq, message.message_uuid, args.room);
        room.leave_room().await?;
        Ok(())
    }
    .await;
    kit.close().await;
    result
}

async fn history(args: HistoryArgs) -> Result<(), Failure> {
    let (kit, account) = connect(&args.login, args.name.as_deref()).await?;
    let name = args.name.clone().unwrap_or_else(|| account.clone());
    let result = async {
        let room = join(&kit, &args.room, &name, args.login.password.as_deref(), Role::Member).await?;
        let messages = recent(&room.chat_controller(), args.limit).await?;
        let me = UserUuid::new(&account).expect("checked at login");
        for message in &messages {
            println!("{}", print::message(message, &me, |u| u.to_string()));
        }
        if messages.is_empty() {
            println!("* no messages in room {}", args.room);
        }
        room.leave_room().await?;
        Ok(())
    }
    .await;
    kit.close().await;
    result
}

async fn rooms(args: RoomsArgs) -> Result<(), Failure> {
    let data = admin_http::get(&args.admin, "/v1/rooms", &args.admin_key).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&data).unwrap_or_default());
        return Ok(());
    }
    let rooms = data["rooms"].as_array().cloned().unwrap_or_default();
    if rooms.is_empty() {
        println!("no rooms");
        return Ok(());
    }
    let mut rows = vec![["ROOM", "NAME", "MEMBERS", "CHATTING", "FLAGS"].map(String::from).to_vec()];
    for room in &rooms {
        let mut flags = Vec::new();
        for (key, flag) in
            [("chatroom_enabled", "chatroom"), ("has_password", "password"), ("locked", "locked")]
        {
            if room[key].as_bool() == Some(true) {
                flags.push(flag.to_string());
            }
        }
        if let Some(max) = room["max_members"].as_u64() {
            flags.push(format!("max {max}"));
        }
        rows.push(vec![
            room["room_uuid"].as_str().unwrap_or_default().to_string(),
            room["room_name"].as_str().unwrap_or_default().to_string(),
            room["member_count"].as_u64().unwrap_or(0).to_string(),
            room["chatroom_member_count"].as_u64().unwrap_or(0).to_string(),
            flags.join(", "),
        ]);
    }
    print!("{}", print::table(&rows));
    Ok(())
}

fn token(args: TokenArgs) -> Result<(), Failure> {
    if args.secret.is_empty() {
        return Err(Failure::plain("--secret must not be empty"));
    }
    let request = TokenRequest {
        account: args.account,
        name: args.name,
        ttl: args.ttl,
        rooms: args.rooms,
        admin: args.admin,
        create_rooms: !args.no_create,
    };
    let issued = JwtAuthenticator::new(args.secret.as_bytes()).issue(request).map_err(|e| {
        let flag = match e.field {
            TokenField::Account => "--account",
            TokenField::Rooms => "--room",
            TokenField::Ttl => "--ttl",
            TokenField::Name => "--name",
            _ => "a token flag",
        };
        Failure::new(Code::BAD_REQUEST, format!("{flag}: {}", e.reason))
    })?;
    println!("{}", issued.token);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_from_names() {
        assert_eq!(account_from_name("Alice").as_deref(), Some("alice"));
        assert_eq!(account_from_name(" Mary Ann ").as_deref(), Some("mary-ann"));
        assert_eq!(account_from_name("Zoë!").as_deref(), Some("zo"));
        assert_eq!(account_from_name("你好"), None);
        assert!(random_account().starts_with("cli-"));
    }

    #[test]
    fn failures_show_the_code_and_its_name() {
        let f = Failure::new(Code::ROOM_NOT_EXIST, "room `x` does not exist");
        assert_eq!(f.to_string(), "error 2000 ROOM_NOT_EXIST: room `x` does not exist");
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
