//! How messages, members and tables look in a terminal.

use roomkit_client::{ChatMessage, RoomMember};
use roomkit_protocol::{model::MessageBody, model::NotificationType, UserUuid};

/// `HH:MM:SS` (UTC) of a server time in milliseconds.
pub(crate) fn clock(ms: u64) -> String {
    let secs = (ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Control characters (escape sequences included) are shown as `?`, so a message cannot
/// move the cursor or recolour the terminal.
pub(crate) fn clean(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '?' } else { c }).collect()
}

/// A member as text: its display name with the account id beside it (`Alice (alice)`), since
/// display names are chosen freely and two members may pick the same one; just the id when
/// the two are equal.
pub(crate) fn who(name: &str, uuid: &UserUuid) -> String {
    if name == uuid.as_str() {
        uuid.to_string()
    } else {
        format!("{} ({uuid})", clean(name))
    }
}

/// One message as a line: `[time] sender (account): text`, with `(to you)`, `→ bob` and
/// `[server]` marks. `name_of` names a user uuid (for the recipients of one's own direct
/// messages).
pub(crate) fn message(m: &ChatMessage, me: &UserUuid, name_of: impl Fn(&UserUuid) -> String) -> String {
    let time = clock(m.time);
    let mine = &m.from_user_uuid == me;
    let mut from = if mine { "you".to_string() } else { who(&m.from_nick, &m.from_user_uuid) };
    if m.from_backend {
        from.push_str(" [server]");
    }
    match &m.to_user_uuid_list {
        Some(to) if mine => {
            let names: Vec<String> = to.iter().map(|u| who(&name_of(u), u)).collect();
            from = format!("{from} → {}", names.join(", "));
        }
        Some(_) => from.push_str(" (to you)"),
        None => {}
    }
    if m.recalled {
        return format!("[{time}] {from}: (recalled)");
    }
    match &m.body {
        MessageBody::Text { text } => format!("[{time}] {from}: {}", clean(text)),
        MessageBody::Custom { attach_str } if attach_str == crate::chat::LIKE => {
            format!("[{time}] {from} sent a like")
        }
        MessageBody::Custom { attach_str } => {
            format!("[{time}] {from} sent custom data: {}", clean(attach_str))
        }
        MessageBody::Notification {
            event_type: NotificationType::MessageRecall,
            recalled_message_id,
            ..
        } => {
            let id = recalled_message_id.as_ref().map_or(String::new(), |id| format!(" ({id})"));
            format!("[{time}] * {from} recalled a message{id}")
        }
        MessageBody::Notification { .. } => format!("[{time}] * notice from {from}"),
    }
}

/// One member as a line of `/members`.
pub(crate) fn member(m: &RoomMember, me: &UserUuid) -> String {
    let mut notes = Vec::new();
    if &m.uuid == me {
        notes.push("you");
    }
    if m.role == roomkit_protocol::Role::Host {
        notes.push("host");
    }
    notes.push(if m.is_in_chatroom { "in the chatroom" } else { "not in the chatroom" });
    format!("  {} ({}): {}", clean(&m.name), m.uuid, notes.join(", "))
}

/// Names of members for a notice: `Alice (alice), bob`.
pub(crate) fn names(members: &[RoomMember]) -> String {
    members.iter().map(|m| who(&m.name, &m.uuid)).collect::<Vec<_>>().join(", ")
}

/// Left-aligned columns, two spaces apart.
pub(crate) fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{:<width$}", clean(cell), width = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_message(from: &str, to: Option<Vec<&str>>, text: &str) -> ChatMessage {
        serde_json::from_value(serde_json::json!({
            "message_uuid": "m1", "seq": 1, "from_user_uuid": from, "from_nick": from.to_uppercase(),
            "to_user_uuid_list": to, "time": 1_767_261_612_000u64, "message_type": "text", "text": text,
        }))
        .unwrap()
    }

    #[test]
    fn messages_read_as_lines() {
        let me: UserUuid = "bob".parse().unwrap();
        let m = text_message("alice", None, "hi\u{1b}[2J all");
        assert_eq!(message(&m, &me, |u| u.to_string()), "[10:00:12] ALICE (alice): hi?[2J all");
        let m = text_message("alice", Some(vec!["bob"]), "psst");
        assert_eq!(message(&m, &me, |u| u.to_string()), "[10:00:12] ALICE (alice) (to you): psst");
        let m = text_message("bob", Some(vec!["alice"]), "psst");
        assert_eq!(message(&m, &me, |_| "Alice".into()), "[10:00:12] you → Alice (alice): psst");
    }

    #[test]
    fn a_member_using_another_ones_name_is_told_apart_by_account_id() {
        let me: UserUuid = "bob".parse().unwrap();
        let mut real: ChatMessage = text_message("alice", None, "hi");
        real.from_nick = "alice".into();
        let mut spoof = text_message("mallory", None, "hi");
        spoof.from_nick = "alice".into();
        assert_eq!(message(&real, &me, |u| u.to_string()), "[10:00:12] alice: hi");
        assert_eq!(message(&spoof, &me, |u| u.to_string()), "[10:00:12] alice (mallory): hi");
    }

    #[test]
    fn an_ephemeral_like_reads_as_a_like() {
        let me: UserUuid = "bob".parse().unwrap();
        let like: ChatMessage = serde_json::from_value(serde_json::json!({
            "message_uuid": "m1", "seq": 0, "from_user_uuid": "alice", "from_nick": "Alice", "persist": false,
            "time": 1_767_261_612_000u64, "message_type": "custom", "attach_str": crate::chat::LIKE,
        }))
        .unwrap();
        assert_eq!(message(&like, &me, |u| u.to_string()), "[10:00:12] Alice (alice) sent a like");
    }

    #[test]
    fn tables_line_up() {
        let rows = vec![vec!["A".to_string(), "BB".into()], vec!["ccc".into(), "d".into()]];
        assert_eq!(table(&rows), "A    BB\nccc  d\n");
    }
}
