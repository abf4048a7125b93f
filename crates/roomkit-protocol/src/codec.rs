//! The JSON codec for whole frames.
//!
//! - Request: `{"id": 1, "op": "join_chatroom", "room_uuid": "r1"}`
//! - Response: `{"id": 1, "code": 0, "msg": "success", "data": {}}`
//! - Event: `{"event": "member_join_chatroom", "room_uuid": "r1", "members": [...]}`
//!
//! Decoding never panics, whatever the bytes (a property test checks it). Unknown fields are
//! ignored, so newer clients and servers interoperate with older ones.

use bytes::Bytes;
use serde::{de::IgnoredAny, Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    ops::{self, Operation, Request, Response},
    Code, Event,
};

/// A decoded request frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// The client's request id, echoed in the response.
    pub id: u64,
    /// The request.
    pub request: Request,
}

/// Why a frame could not be decoded: the code and message to answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    /// The request id, when the frame got far enough to have one.
    pub id: Option<u64>,
    /// [`Code::MALFORMED_FRAME`], [`Code::UNKNOWN_OPERATION`] or [`Code::BAD_REQUEST`].
    pub code: Code,
    /// What is wrong; for a bad request it names the field.
    pub message: String,
}

/// The two fields every request has, read leniently so that a frame with a readable `id`
/// is always answered with that `id`, whatever is wrong with the rest.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    op: Option<&'a RawValue>,
}

/// Decodes a client request frame.
pub fn decode_request(bytes: &[u8]) -> Result<RequestFrame, DecodeError> {
    let malformed = |id, message: String| DecodeError { id, code: Code::MALFORMED_FRAME, message };
    // serde reads a struct from a JSON array too; a frame must be an object.
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        return Err(malformed(None, "frame is not a JSON object with `id` and `op`: it is an array".into()));
    }
    let envelope: Envelope<'_> = serde_json::from_slice(bytes)
        .map_err(|e| malformed(None, format!("frame is not a JSON object with `id` and `op`: {e}")))?;
    let id = match envelope.id {
        None => return Err(malformed(None, "missing numeric field `id`".into())),
        Some(raw) => serde_json::from_str::<u64>(raw.get())
            .map_err(|_| malformed(None, "field `id` is not an unsigned integer".into()))?,
    };
    let op: std::borrow::Cow<'_, str> = match envelope.op {
        None => return Err(malformed(Some(id), "missing string field `op`".into())),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|_| malformed(Some(id), "field `op` is not a string".into()))?,
    };
    match ops::decode_params(&op, bytes) {
        None => Err(DecodeError {
            id: Some(id),
            code: Code::UNKNOWN_OPERATION,
            message: format!("unknown operation `{}`", truncate(&op, 64)),
        }),
        Some(Err(e)) => {
            Err(DecodeError { id: Some(id), code: Code::BAD_REQUEST, message: bad_request_message(&e) })
        }
        Some(Ok(request)) => Ok(RequestFrame { id, request }),
    }
}

fn bad_request_message(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    let inner = e.inner().to_string();
    // serde_json appends " at line L column C"; the field name is more useful.
    let inner = inner.split(" at line ").next().unwrap_or(&inner);
    if path == "." || path.is_empty() {
        format!("bad request: {inner}")
    } else {
        format!("bad request: field `{path}`: {inner}")
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[derive(Serialize)]
struct RequestOut<'a, O> {
    id: u64,
    op: &'static str,
    #[serde(flatten)]
    params: &'a O,
}

/// Encodes a request frame.
pub fn encode_request<O: Operation>(id: u64, params: &O) -> Bytes {
    to_bytes(&RequestOut { id, op: O::OP, params })
}

#[derive(Serialize)]
struct ResponseOut<'a, D: Serialize> {
    id: Option<u64>,
    code: Code,
    msg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a D>,
}

/// Encodes a successful response frame.
pub fn encode_success(id: u64, data: &Response) -> Bytes {
    written(|out| write_success(out, id, data))
}

/// [`encode_success`], appended to `out`.
pub fn write_success(out: &mut Vec<u8>, id: u64, data: &Response) {
    write(out, &ResponseOut { id: Some(id), code: Code::SUCCESS, msg: "success", data: Some(data) });
}

/// Encodes a successful response frame for a typed output (servers and tests).
pub fn encode_output<O: Operation>(id: u64, data: &O::Output) -> Bytes {
    to_bytes(&ResponseOut { id: Some(id), code: Code::SUCCESS, msg: "success", data: Some(data) })
}

/// Encodes an error response frame. `id` is `None` when the request had no readable id.
pub fn encode_error(id: Option<u64>, code: Code, msg: &str) -> Bytes {
    written(|out| write_error(out, id, code, msg))
}

/// [`encode_error`], appended to `out`.
pub fn write_error(out: &mut Vec<u8>, id: Option<u64>, code: Code, msg: &str) {
    write(out, &ResponseOut::<()> { id, code, msg, data: None });
}

/// Encodes an event frame. Encode once, then share the bytes with every recipient.
pub fn encode_event(event: &Event) -> Bytes {
    written(|out| write_event(out, event))
}

/// [`encode_event`], appended to `out`.
pub fn write_event(out: &mut Vec<u8>, event: &Event) {
    write(out, event);
}

fn to_bytes<T: Serialize + ?Sized>(value: &T) -> Bytes {
    written(|out| write(out, value))
}

/// What `write` appends to an empty buffer.
fn written(write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut out = Vec::with_capacity(128);
    write(&mut out);
    Bytes::from(out)
}

fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serialising these types cannot fail: no maps with non-string keys, no failing
    // Serialize impls.
    serde_json::to_writer(out, value).expect("protocol types always serialise");
}

/// A response frame as the client receives it; `data` is decoded by the caller, who knows
/// which operation it answers.
#[derive(Debug, Deserialize)]
pub struct ResponseFrame {
    /// The request id; `None` when the server could not read one.
    pub id: Option<u64>,
    /// The result code.
    pub code: Code,
    /// The message.
    #[serde(default)]
    pub msg: String,
    /// The operation's output, on success.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

impl ResponseFrame {
    /// Decodes `data` as the output of `O`. A success without `data` decodes from `{}`.
    pub fn output<O: Operation>(&self) -> Result<O::Output, DecodeError> {
        let raw = self.data.as_deref().map_or("{}", RawValue::get);
        serde_json::from_str(raw).map_err(|e| DecodeError {
            id: self.id,
            code: Code::MALFORMED_FRAME,
            message: format!("response to `{}` has unexpected data: {e}", O::OP),
        })
    }
}

/// Any frame a client receives.
#[derive(Debug)]
pub enum ServerFrame {
    /// A response to one of the client's requests.
    Response(ResponseFrame),
    /// A pushed event.
    Event(Event),
}

#[derive(Deserialize)]
struct ServerProbe {
    event: Option<IgnoredAny>,
}

/// Decodes a frame sent by the server.
pub fn decode_server_frame(bytes: &[u8]) -> Result<ServerFrame, DecodeError> {
    let malformed = |e: serde_json::Error| DecodeError {
        id: None,
        code: Code::MALFORMED_FRAME,
        message: format!("malformed server frame: {e}"),
    };
    let probe: ServerProbe = serde_json::from_slice(bytes).map_err(malformed)?;
    if probe.event.is_some() {
        serde_json::from_slice(bytes).map(ServerFrame::Event).map_err(malformed)
    } else {
        serde_json::from_slice(bytes).map(ServerFrame::Response).map_err(malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{JoinRoom, SendTextMessage};

    #[test]
    fn request_round_trip() {
        let params = SendTextMessage {
            room_uuid: "r1".parse().unwrap(),
            message_uuid: Some("m1".parse().unwrap()),
            to_user_uuid_list: None,
            text: "hi".into(),
        };
        let bytes = encode_request(3, &params);
        let frame = decode_request(&bytes).unwrap();
        assert_eq!(frame.id, 3);
        assert_eq!(frame.request, Request::SendTextMessage(params));
    }

    #[test]
    fn malformed_unknown_and_bad_requests_are_told_apart() {
        let e = decode_request(b"not json").unwrap_err();
        assert_eq!((e.id, e.code), (None, Code::MALFORMED_FRAME));
        let e = decode_request(br#"{"op":"ping"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (None, Code::MALFORMED_FRAME));
        let e = decode_request(br#"{"id":4}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(4), Code::MALFORMED_FRAME));
        let e = decode_request(br#"{"id":5,"op":"fly"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(5), Code::UNKNOWN_OPERATION));
        assert!(e.message.contains("fly"));
    }

    #[test]
    fn a_readable_id_is_kept_whatever_else_is_wrong() {
        let e = decode_request(br#"{"id":102,"op":5}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(102), Code::MALFORMED_FRAME));
        let e = decode_request(br#"{"id":103,"op":null}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(103), Code::MALFORMED_FRAME));
        let e = decode_request(br#"[105,"ping"]"#).unwrap_err();
        assert_eq!((e.id, e.code), (None, Code::MALFORMED_FRAME));
        let e = decode_request(br#"{"id":"104","op":"ping"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (None, Code::MALFORMED_FRAME));
        let f = decode_request(br#"{"id":105,"op":"p\u0069ng"}"#).unwrap();
        assert_eq!(f.id, 105);
    }

    #[test]
    fn null_means_absent_for_every_optional_field() {
        let f = decode_request(
            br#"{"id":1,"op":"create_room","room_uuid":"r","room_name":"n","template_id":null,
                "initial_room_properties":null,"enable_chatroom":null}"#,
        )
        .unwrap();
        let Request::CreateRoom(create) = f.request else { panic!("{:?}", f.request) };
        assert!(create.initial_room_properties.is_empty() && !create.enable_chatroom);
        let f = decode_request(
            br#"{"id":2,"op":"join_room","room_uuid":"r","user_name":"a","role":null,"avatar":null,
                "initial_my_properties":null,"resume":null}"#,
        )
        .unwrap();
        let Request::JoinRoom(join) = f.request else { panic!("{:?}", f.request) };
        assert!(join.initial_my_properties.is_empty() && !join.resume);
        assert!(decode_request(br#"{"id":3,"op":"end_room","room_uuid":"r","force":null}"#).is_ok());
        assert!(
            decode_request(br#"{"id":4,"op":"fetch_chatroom_history","room_uuid":"r","order":null}"#).is_ok()
        );
    }

    #[test]
    fn bad_request_names_the_field() {
        let e = decode_request(br#"{"id":1,"op":"join_room","room_uuid":"no spaces","user_name":"a"}"#)
            .unwrap_err();
        assert_eq!(e.code, Code::BAD_REQUEST);
        assert!(e.message.contains("room_uuid"), "{}", e.message);
        let e = decode_request(br#"{"id":1,"op":"join_room","room_uuid":"r"}"#).unwrap_err();
        assert_eq!(e.code, Code::BAD_REQUEST);
        assert!(e.message.contains("user_name"), "{}", e.message);
        let e = decode_request(br#"{"id":1,"op":"join_room","room_uuid":"r","user_name":7}"#).unwrap_err();
        assert!(e.message.contains("user_name"), "{}", e.message);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let f =
            decode_request(br#"{"id":1,"op":"join_room","room_uuid":"r","user_name":"a","x":1}"#).unwrap();
        assert!(matches!(f.request, Request::JoinRoom(JoinRoom { .. })));
    }

    #[test]
    fn responses_and_events_decode_on_the_client() {
        let ok = encode_output::<crate::ops::Ping>(9, &crate::ops::Empty {});
        match decode_server_frame(&ok).unwrap() {
            ServerFrame::Response(r) => {
                assert_eq!((r.id, r.code), (Some(9), Code::SUCCESS));
                r.output::<crate::ops::Ping>().unwrap();
            }
            other => panic!("{other:?}"),
        }
        let err = encode_error(Some(2), Code::ROOM_FULL, "room is full");
        assert_eq!(&err[..], br#"{"id":2,"code":2005,"msg":"room is full"}"#);
        let ev = Event::RoomLockStateChanged { room_uuid: "r".parse().unwrap(), locked: true };
        let bytes = encode_event(&ev);
        assert_eq!(&bytes[..], br#"{"event":"room_lock_state_changed","room_uuid":"r","locked":true}"#);
        match decode_server_frame(&bytes).unwrap() {
            ServerFrame::Event(e) => assert_eq!(e, ev),
            other => panic!("{other:?}"),
        }
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                let _ = decode_request(&bytes);
                let _ = decode_server_frame(&bytes);
            }

            #[test]
            fn decoding_json_shaped_text_never_panics(
                id in proptest::option::of(any::<i64>()),
                op in proptest::sample::select(crate::ops::ALL_OPS.to_vec()),
                field in "[a-z_]{1,16}",
                value in "\\PC{0,40}",
            ) {
                let text = match id {
                    Some(id) => format!(r#"{{"id":{id},"op":"{op}","{field}":"{value}","room_uuid":"{value}"}}"#),
                    None => format!(r#"{{"op":"{op}","{field}":{value}}}"#),
                };
                let _ = decode_request(text.as_bytes());
                let _ = decode_server_frame(text.as_bytes());
            }
        }
    }
}
