//! Keeps `docs/protocol.md` true to the code.
//!
//! Every fenced block tagged exactly `json` in the document is one complete frame, and this
//! test decodes each one with the crate's own codec:
//!
//! - a block with an `"op"` key is a request: it must decode with
//!   [`codec::decode_request`], and re-encoding the decoded request must reproduce every
//!   field the example shows (so a misspelt field, which the codec would silently ignore,
//!   fails here);
//! - any other block must decode with [`codec::decode_server_frame`]: an event must
//!   re-encode to what the example shows; a success response must answer the most recent
//!   request example with the same `id`, and its `data` must decode as that operation's
//!   output and re-encode to what the example shows; an error response must carry a known
//!   failure code and no `data`.
//!
//! It also checks that the document covers the protocol: a request example for every
//! operation in [`ops::ALL_OPS`], an example of every event kind, a section for each, and
//! the code table row of every code in [`ALL_CODES`], exactly as `code.rs` defines it.
//!
//! Other snippets (model objects alone, partial frames) use another fence tag, such as
//! `jsonc` or `text`, and are not checked.

use std::collections::{BTreeSet, HashMap};

use roomkit_protocol::{
    codec::{self, ResponseFrame, ServerFrame},
    ops::{self, Operation, Request},
    ALL_CODES,
};
use serde_json::Value;

/// Every event kind, by its wire name.
const EVENT_KINDS: &[&str] = &[
    "member_join_room",
    "member_leave_room",
    "member_join_chatroom",
    "member_leave_chatroom",
    "chatroom_messages_received",
    "room_end",
    "room_properties_changed",
    "room_properties_deleted",
    "room_lock_state_changed",
    "members_changed",
];

fn read_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// A fenced `json` block: the line its fence opens on (1-based) and its text.
struct Block {
    line: usize,
    text: String,
}

fn json_blocks(doc: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    let mut in_other_fence = false;
    for (i, line) in doc.lines().enumerate() {
        let fence = line.trim();
        match &mut open {
            Some(block) => {
                if fence == "```" {
                    blocks.push(open.take().expect("open"));
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
            None if in_other_fence => in_other_fence = fence != "```",
            None if fence == "```json" => open = Some(Block { line: i + 1, text: String::new() }),
            None => in_other_fence = fence.starts_with("```"),
        }
    }
    assert!(open.is_none(), "a ```json block is not closed");
    assert!(!in_other_fence, "a fenced block is not closed");
    blocks
}

/// Asserts that everything `shown` contains is in `canonical` with the same value. Fields
/// the example leaves out (defaults, skipped options) are not required.
fn assert_shown_in(shown: &Value, canonical: &Value, path: &str, line: usize) {
    match (shown, canonical) {
        (Value::Object(s), Value::Object(c)) => {
            for (key, value) in s {
                let Some(cv) = c.get(key) else {
                    panic!(
                        "line {line}: field `{path}.{key}` is not part of the frame (misspelt or unknown)"
                    );
                };
                assert_shown_in(value, cv, &format!("{path}.{key}"), line);
            }
        }
        (Value::Array(s), Value::Array(c)) => {
            assert_eq!(s.len(), c.len(), "line {line}: `{path}` length");
            for (i, (sv, cv)) in s.iter().zip(c).enumerate() {
                assert_shown_in(sv, cv, &format!("{path}[{i}]"), line);
            }
        }
        _ => assert_eq!(shown, canonical, "line {line}: `{path}` differs from its re-encoding"),
    }
}

fn to_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("the codec writes JSON")
}

/// Re-encodes a decoded request with the crate's encoder.
fn reencode_request(id: u64, request: &Request) -> Value {
    macro_rules! each {
        ($($variant:ident),* $(,)?) => {
            match request {
                $( Request::$variant(params) => to_value(&codec::encode_request(id, params)), )*
                other => panic!("operation `{}` is missing from this test's list", other.op()),
            }
        };
    }
    each!(
        Login,
        Ping,
        CreateRoom,
        JoinRoom,
        LeaveRoom,
        EndRoom,
        LockRoom,
        UnlockRoom,
        UpdateRoomProperty,
        DeleteRoomProperty,
        JoinChatroom,
        LeaveChatroom,
        SendTextMessage,
        SendCustomMessage,
        FetchChatroomHistory,
        RecallChatroomMessage,
        FetchRoomMembers,
        FetchChatroomMembers,
        GetRoomInfo,
    )
}

/// Decodes a success response's `data` as the output of `op`, and re-encodes the frame.
fn reencode_success(op: &str, id: u64, frame: &ResponseFrame, line: usize) -> Value {
    macro_rules! each {
        ($($ty:ident),* $(,)?) => {{
            $(
                if op == ops::$ty::OP {
                    let output = frame.output::<ops::$ty>().unwrap_or_else(|e| {
                        panic!("line {line}: `data` is not a `{op}` output: {}", e.message)
                    });
                    return to_value(&codec::encode_output::<ops::$ty>(id, &output));
                }
            )*
            panic!("operation `{op}` is missing from this test's list")
        }};
    }
    each!(
        Login,
        Ping,
        CreateRoom,
        JoinRoom,
        LeaveRoom,
        EndRoom,
        LockRoom,
        UnlockRoom,
        UpdateRoomProperty,
        DeleteRoomProperty,
        JoinChatroom,
        LeaveChatroom,
        SendTextMessage,
        SendCustomMessage,
        FetchChatroomHistory,
        RecallChatroomMessage,
        FetchRoomMembers,
        FetchChatroomMembers,
        GetRoomInfo,
    )
}

#[test]
fn every_json_example_is_a_valid_frame_and_the_doc_covers_the_protocol() {
    let doc = read_doc();
    let blocks = json_blocks(&doc);
    assert!(!blocks.is_empty(), "no ```json blocks found");

    let mut ops_seen = BTreeSet::new();
    let mut events_seen = BTreeSet::new();
    let mut event_examples = 0;
    let mut last_op_by_id: HashMap<u64, String> = HashMap::new();
    let (mut requests, mut successes, mut errors) = (0, 0, 0);

    for Block { line, text } in &blocks {
        let line = *line;
        let shown: Value = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("line {line}: not one complete JSON document: {e}"));
        let object = shown.as_object().unwrap_or_else(|| panic!("line {line}: a frame is a JSON object"));

        if object.contains_key("op") {
            let frame = codec::decode_request(text.as_bytes())
                .unwrap_or_else(|e| panic!("line {line}: request does not decode: {e}"));
            assert_shown_in(&shown, &reencode_request(frame.id, &frame.request), "", line);
            let op = frame.request.op();
            assert_eq!(ops::ALL_OPS[frame.request.op_index()], op, "line {line}: the operation's index");
            ops_seen.insert(op);
            last_op_by_id.insert(frame.id, op.to_owned());
            requests += 1;
            continue;
        }

        match codec::decode_server_frame(text.as_bytes())
            .unwrap_or_else(|e| panic!("line {line}: server frame does not decode: {e}"))
        {
            ServerFrame::Event(event) => {
                let kind = object["event"].as_str().expect("decoded events have a string kind");
                assert!(EVENT_KINDS.contains(&kind), "line {line}: unexpected event kind `{kind}`");
                assert_shown_in(&shown, &to_value(&codec::encode_event(&event)), "", line);
                events_seen.insert(kind.to_owned());
                event_examples += 1;
            }
            ServerFrame::Response(response) if response.code.is_success() => {
                assert_eq!(response.msg, "success", "line {line}: a success says \"success\"");
                let id = response.id.unwrap_or_else(|| panic!("line {line}: a success has an id"));
                let op = last_op_by_id
                    .get(&id)
                    .unwrap_or_else(|| panic!("line {line}: no request example with id {id} before it"));
                assert_shown_in(&shown, &reencode_success(op, id, &response, line), "", line);
                successes += 1;
            }
            ServerFrame::Response(response) => {
                assert!(
                    response.code.info().is_some(),
                    "line {line}: code {} is not in the code table",
                    response.code.0
                );
                assert!(response.data.is_none(), "line {line}: an error response has no `data`");
                assert!(!response.msg.is_empty(), "line {line}: an error response has a `msg`");
                errors += 1;
            }
        }
    }

    for op in ops::ALL_OPS {
        assert!(ops_seen.contains(op), "no request example for operation `{op}`");
        assert!(doc.contains(&format!("### `{op}`")), "no section `### `{op}``");
    }
    for kind in EVENT_KINDS {
        assert!(events_seen.contains(*kind), "no example of event `{kind}`");
        assert!(doc.contains(&format!("### `{kind}`")), "no section `### `{kind}``");
    }
    assert!(event_examples >= EVENT_KINDS.len(), "expected at least {} event examples", EVENT_KINDS.len());
    assert!(successes >= ops::ALL_OPS.len(), "expected a success response example per operation");
    assert!(requests > 0 && errors > 0);
}

#[test]
fn the_code_table_is_copied_exactly() {
    let doc = read_doc();
    for info in ALL_CODES {
        assert!(doc.contains(info.name), "code {} is not mentioned", info.name);
        let row =
            format!("| {} | `{}` | {} | {} |", info.code.0, info.name, info.http_status, info.description);
        assert!(doc.lines().any(|l| l.starts_with(&row)), "the code table has no row starting with `{row}`");
    }
}
