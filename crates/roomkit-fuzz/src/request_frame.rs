//! Target `request_frame`: roomkit-protocol's codec, fed arbitrary bytes as a client's frame.
//!
//! What must hold whatever the bytes:
//! - decoding returns, never panics (for a request frame and for a server frame);
//! - a decoded request names one of the protocol's operations;
//! - a refused frame gets one of the three codec codes, with a message, and an `id` whenever
//!   the code says the frame got as far as having one;
//! - the answer the server sends for it (`encode_error`) is a response frame a client decodes
//!   back to the same `id`, code and message.

use roomkit_protocol::{
    codec::{decode_request, decode_server_frame, encode_error, ServerFrame},
    ops::{self, ALL_OPS},
    Code,
};

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    match decode_request(data) {
        Ok(frame) => {
            let op = frame.request.op();
            assert!(ALL_OPS.contains(&op), "decoded an operation the protocol does not list: {op}");
            answer_round_trips(Some(frame.id), Code::SUCCESS, "success");
        }
        Err(e) => {
            let codec_codes = [Code::MALFORMED_FRAME, Code::UNKNOWN_OPERATION, Code::BAD_REQUEST];
            assert!(codec_codes.contains(&e.code), "unexpected code {} for {:?}", e.code, e.message);
            assert!(!e.message.is_empty(), "a refusal without a message");
            if e.code != Code::MALFORMED_FRAME {
                assert!(e.id.is_some(), "{} without the request's id", e.code);
            }
            answer_round_trips(e.id, e.code, &e.message);
        }
    }
    // The same bytes as a server frame (the client's decoder): any outcome but a panic, and a
    // response's data decodes (or not) as any operation's output.
    if let Ok(ServerFrame::Response(response)) = decode_server_frame(data) {
        let _ = response.output::<ops::JoinRoom>();
        let _ = response.output::<ops::SendTextMessage>();
        let _ = response.output::<ops::FetchChatroomHistory>();
        let _ = response.output::<ops::FetchRoomMembers>();
    }
}

/// The error answer for `id` decodes on the client to the same id, code and message.
fn answer_round_trips(id: Option<u64>, code: Code, message: &str) {
    let answer = encode_error(id, code, message);
    match decode_server_frame(&answer) {
        Ok(ServerFrame::Response(r)) => {
            assert_eq!((r.id, r.code, r.msg.as_str()), (id, code, message), "the answer changed on the way");
        }
        Ok(ServerFrame::Event(e)) => panic!("an answer decoded as an event: {e:?}"),
        Err(e) => panic!("the client cannot read the server's answer: {e}"),
    }
}
