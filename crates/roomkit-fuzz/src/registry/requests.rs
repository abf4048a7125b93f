//! The requests of the `registry` target: every room and chatroom operation, built as the
//! JSON a client sends (and decoded by the protocol's codec, as the server does), with values
//! drawn from small pools so that the few connections keep meeting in the same rooms, on the
//! same messages, and just either side of every limit the target's configuration sets.

use serde_json::{json, Map, Value};

use crate::input::Input;

/// The rooms every request picks from.
pub(super) const ROOMS: &[&str] = &["r0", "r1", "r2"];
/// Accounts: those of the target's connections, and one that never connects.
pub(super) const USERS: &[&str] = &["u0", "u1", "u2", "u3", "u9"];
/// Client message ids, so that retries and recalls hit earlier sends.
const MESSAGE_IDS: &[&str] = &["m0", "m1", "m2"];
const KEYS: &[&str] = &["k0", "k1", "k2"];
/// Names at, inside and over the target's 8-character limit.
const NAMES: &[&str] = &["Ann", "Eightchr", "", "Ninechars"];
/// Texts inside, at and over the target's 16-byte limit.
pub(super) const TEXTS: &[&str] = &["hi", "sixteen bytes ok", "", "seventeen bytes!!"];
const PASSWORDS: &[&str] = &["pw", "PW"];
/// Property values inside and over the target's 8-byte limit.
const VALUES: &[&str] = &["v", "", "nine byte"];

/// A request frame, read from `input`. `cursors` are the `next_cursor`s
/// of member pages answered so far; `now` is the current time.
pub(super) fn request(input: &mut Input<'_>, cursors: &[String], now: u64) -> Value {
    let mut m = Map::new();
    m.insert("room_uuid".into(), json!(input.pick(ROOMS)));
    let op = match input.below(18) {
        0 => {
            m.insert("room_name".into(), json!(input.pick(NAMES)));
            m.insert("enable_chatroom".into(), json!(input.below(4) != 0));
            maybe(&mut m, "password", input.maybe(PASSWORDS).map(|p| json!(p)));
            maybe(&mut m, "max_members", input.maybe(&[1, 2, 0]).map(|n| json!(n)));
            maybe(&mut m, "template_id", input.maybe(&["lecture"]).map(|t| json!(t)));
            maybe(&mut m, "initial_room_properties", properties(input));
            "create_room"
        }
        1 => {
            m.insert("user_name".into(), json!(input.pick(NAMES)));
            maybe(&mut m, "role", input.maybe(&["host", "member"]).map(|r| json!(r)));
            maybe(&mut m, "avatar", input.maybe(&["https://a.example/1.png"]).map(|a| json!(a)));
            maybe(&mut m, "password", input.maybe(PASSWORDS).map(|p| json!(p)));
            maybe(&mut m, "initial_my_properties", properties(input));
            maybe(&mut m, "resume", input.maybe(&[true, false]).map(|r| json!(r)));
            "join_room"
        }
        2 => "leave_room",
        3 => {
            maybe(&mut m, "force", input.maybe(&[true, false]).map(|f| json!(f)));
            "end_room"
        }
        4 => "lock_room",
        5 => "unlock_room",
        6 => {
            m.insert("key".into(), json!(input.pick(KEYS)));
            m.insert("value".into(), json!(input.pick(VALUES)));
            "update_room_property"
        }
        7 => {
            m.insert("key".into(), json!(input.pick(KEYS)));
            "delete_room_property"
        }
        8 => {
            maybe(&mut m, "history_count", input.maybe(&[1, 100, 0, 101]).map(|n| json!(n)));
            "join_chatroom"
        }
        9 => "leave_chatroom",
        10 | 11 => {
            maybe(&mut m, "message_uuid", input.maybe(MESSAGE_IDS).map(|id| json!(id)));
            maybe(&mut m, "to_user_uuid_list", recipients(input));
            let text = json!(input.pick(TEXTS));
            if input.flag() {
                m.insert("text".into(), text);
                "send_text_message"
            } else {
                m.insert("attach_str".into(), text);
                maybe(&mut m, "persist", input.maybe(&[false, true]).map(|p| json!(p)));
                "send_custom_message"
            }
        }
        12 => {
            let times = [now, now.saturating_sub(1_000), 0, u64::MAX];
            maybe(&mut m, "start_time", input.maybe(&times).map(|t| json!(t)));
            maybe(&mut m, "limit", input.maybe(&[1, 100, 0, 101]).map(|n| json!(n)));
            maybe(&mut m, "order", input.maybe(&["desc", "asc"]).map(|o| json!(o)));
            maybe(&mut m, "after_seq", input.maybe(&[0, 1, 3, u64::MAX]).map(|s| json!(s)));
            "fetch_chatroom_history"
        }
        13 => {
            m.insert("message_uuid".into(), json!(input.pick(MESSAGE_IDS)));
            "recall_chatroom_message"
        }
        14 | 15 => {
            let junk = ["", "zz", "r99999999999999999999", "c-1"];
            let cursor = match input.below(3) {
                0 => None,
                1 => cursors.last().cloned().or_else(|| Some("r1".into())),
                _ => Some(input.pick(&junk).to_string()),
            };
            maybe(&mut m, "cursor", cursor.map(Value::from));
            maybe(&mut m, "limit", input.maybe(&[1, 2, 0, 101]).map(|n| json!(n)));
            if input.flag() {
                "fetch_room_members"
            } else {
                "fetch_chatroom_members"
            }
        }
        16 => "get_room_info",
        _ => {
            m.remove("room_uuid");
            "ping"
        }
    };
    m.insert("op".into(), json!(op));
    // The driver numbers requests itself; the frame's id only has to be there.
    m.insert("id".into(), json!(0));
    Value::Object(m)
}

fn maybe(m: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        m.insert(key.into(), value);
    }
}

/// `None`, or one to three properties (some keys repeat, some values are over the limit).
fn properties(input: &mut Input<'_>) -> Option<Value> {
    let count = input.below(4);
    (count > 0).then(|| {
        let props: Map<String, Value> =
            (0..count).map(|_| (input.pick(KEYS).to_string(), json!(input.pick(VALUES)))).collect();
        Value::Object(props)
    })
}

/// `None`, or a list of recipients: any of the accounts, the empty list included.
fn recipients(input: &mut Input<'_>) -> Option<Value> {
    if input.flag() {
        return None;
    }
    let mask = input.byte();
    let list: Vec<&str> =
        USERS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, u)| *u).collect();
    Some(json!(list))
}
