//! The scripted mode of `ws_frames`: a script of client frames read from fuzz bytes, the
//! bytes that carry it, and what the server must make of it.
//!
//! The expectations are written from RFC 6455 and roomkit's rules (`docs/protocol.md`), not
//! from the server's code: messages may come in fragments with control frames between them;
//! a message over the limit ends the stream with `FRAME_TOO_LARGE` as soon as a frame
//! header shows it; a binary message is refused with `UNSUPPORTED_FRAME` and the stream goes
//! on; a text message that is not UTF-8, an unmasked frame, reserved bits, a continuation with
//! nothing to continue, a new message inside a fragmented one, a fragmented or long control
//! frame, an unknown opcode and a length with its top bit set end it with `MALFORMED_FRAME`.

use roomkit_core::transport::TransportError;
use roomkit_protocol::Code;

use super::MAX_MESSAGE;
use crate::input::Input;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const FIN: u8 = 0x80;

/// Most frames-or-messages in one script.
const MAX_UNITS: usize = 24;

/// How the server's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ending {
    /// Closed: the client closed or its bytes ended.
    Closed,
    /// A protocol violation, with its code.
    Violation(Code),
    /// Any other error (none is expected).
    Other,
}

impl Ending {
    pub(super) fn of(e: &TransportError) -> Self {
        match e {
            TransportError::Closed(_) => Ending::Closed,
            TransportError::Violation(reason) => Ending::Violation(reason.code),
            _ => Ending::Other,
        }
    }
}

/// One thing the server's stream must produce.
#[derive(Debug)]
pub(super) enum Expect {
    Message(Vec<u8>),
    Rejected(Code),
    Ended(Ending),
}

/// The client's bytes, and what the server must make of them.
#[derive(Debug, Default)]
pub(super) struct Script {
    /// Every frame, encoded and masked, back to back.
    pub(super) wire: Vec<u8>,
    /// What the server's stream produces, in order; the last item ends it.
    pub(super) expect: Vec<Expect>,
    /// The control frames the server sends back, in order: (opcode, payload).
    pub(super) replies: Vec<(u8, Vec<u8>)>,
}

impl Script {
    /// Reads a script from `input`.
    pub(super) fn generate(input: &mut Input<'_>) -> Script {
        let mut script = Script::default();
        for _ in 0..MAX_UNITS {
            if input.is_empty() {
                break;
            }
            if let Some(ending) = script.unit(input) {
                script.expect.push(Expect::Ended(ending));
                return script;
            }
        }
        // The client's stream ends after its last frame.
        script.expect.push(Expect::Ended(Ending::Closed));
        script
    }

    /// One message or frame; `Some` when it ends the stream.
    fn unit(&mut self, input: &mut Input<'_>) -> Option<Ending> {
        match input.below(8) {
            0 | 1 => self.message(input, OP_TEXT),
            2 => self.message(input, OP_BINARY),
            3 => self.control(input, OP_PING),
            4 => self.control(input, OP_PONG),
            5 => Some(self.close(input)),
            6 => Some(self.violation(input)),
            _ => Some(self.cut(input)),
        }
    }

    /// A text or binary message in 1 to 4 fragments, with control frames between them.
    fn message(&mut self, input: &mut Input<'_>, opcode: u8) -> Option<Ending> {
        let payload = if input.below(4) == 0 {
            // Right around the limit.
            vec![b'x'; MAX_MESSAGE - 4 + input.below(9)]
        } else {
            input.bytes(255).to_vec()
        };
        let fragments = 1 + input.below(4);
        let mut cuts: Vec<usize> = (1..fragments).map(|_| input.below(payload.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.insert(0, 0);
        cuts.push(payload.len());
        let mut so_far = 0;
        for (i, bounds) in cuts.windows(2).enumerate() {
            if i > 0 && input.below(3) == 0 {
                let control = if input.flag() { OP_PING } else { OP_PONG };
                self.control(input, control);
            }
            let part = &payload[bounds[0]..bounds[1]];
            let fin = if i + 1 == fragments { FIN } else { 0 };
            let op = if i == 0 { opcode } else { OP_CONTINUATION };
            self.frame(input, fin | op, part);
            so_far += part.len();
            if so_far > MAX_MESSAGE {
                return Some(Ending::Violation(Code::FRAME_TOO_LARGE));
            }
        }
        if opcode == OP_BINARY {
            self.expect.push(Expect::Rejected(Code::UNSUPPORTED_FRAME));
        } else if std::str::from_utf8(&payload).is_ok() {
            self.expect.push(Expect::Message(payload));
        } else {
            return Some(Ending::Violation(Code::MALFORMED_FRAME));
        }
        None
    }

    /// A ping (answered with a pong carrying its payload) or a pong (ignored).
    fn control(&mut self, input: &mut Input<'_>, opcode: u8) -> Option<Ending> {
        let payload = input.bytes(125).to_vec();
        self.frame(input, FIN | opcode, &payload);
        if opcode == OP_PING {
            self.replies.push((OP_PONG, payload));
        }
        None
    }

    /// A close, answered as RFC 6455 says: the same status; an empty close for an empty
    /// one; 1002 for a one-byte payload or a status no endpoint may send; 1007 for a reason
    /// that is not UTF-8.
    fn close(&mut self, input: &mut Input<'_>) -> Ending {
        const STATUSES: &[u16] = &[1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016];
        let payload = match input.below(4) {
            0 => Vec::new(),
            1 => vec![input.byte()],
            kind => {
                let status = if kind == 2 {
                    *input.pick(STATUSES)
                } else {
                    u16::from_be_bytes([input.byte(), input.byte()])
                };
                let mut payload = status.to_be_bytes().to_vec();
                payload.extend_from_slice(input.bytes(123));
                payload
            }
        };
        let answer = match payload.as_slice() {
            [] => None,
            [_] => Some(1002),
            [hi, lo, reason @ ..] => {
                let status = u16::from_be_bytes([*hi, *lo]);
                let sendable = matches!(status, 1000..=1003 | 1007..=1014 | 3000..=4999);
                if !sendable {
                    Some(1002)
                } else if std::str::from_utf8(reason).is_err() {
                    Some(1007)
                } else {
                    Some(status)
                }
            }
        };
        self.frame(input, FIN | OP_CLOSE, &payload);
        self.replies.push((OP_CLOSE, answer.map(|s| s.to_be_bytes().to_vec()).unwrap_or_default()));
        Ending::Closed
    }

    /// A frame that breaks the protocol.
    fn violation(&mut self, input: &mut Input<'_>) -> Ending {
        let payload = input.bytes(40).to_vec();
        let mask = [input.byte(), input.byte(), input.byte(), input.byte()];
        match input.below(8) {
            0 => encode(&mut self.wire, FIN | OP_TEXT, &payload, None, 0),
            1 => {
                let rsv = [0x40, 0x20, 0x10][input.below(3)];
                encode(&mut self.wire, FIN | rsv | OP_TEXT, &payload, Some(mask), 0);
            }
            2 => encode(&mut self.wire, FIN | OP_CONTINUATION, &payload, Some(mask), 0),
            3 => {
                let first = if input.flag() { OP_TEXT } else { OP_BINARY };
                encode(&mut self.wire, first, &payload, Some(mask), 0);
                let next = if input.flag() { OP_TEXT } else { OP_BINARY };
                encode(&mut self.wire, FIN | next, b"", Some(mask), 0);
            }
            4 => encode(&mut self.wire, OP_PING, &payload, Some(mask), 0),
            5 => {
                let long = vec![b'p'; 126 + input.below(40)];
                encode(&mut self.wire, FIN | OP_PING, &long, Some(mask), 0);
            }
            6 => {
                let opcode = *input.pick(&[3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]);
                encode(&mut self.wire, FIN | opcode, &payload, Some(mask), 0);
            }
            _ => {
                self.wire.extend_from_slice(&[FIN | OP_TEXT, 0x80 | 127, 0x80 | input.byte()]);
                self.wire.extend_from_slice(&[input.byte(); 7]);
                self.wire.extend_from_slice(&mask);
            }
        }
        Ending::Violation(Code::MALFORMED_FRAME)
    }

    /// A valid frame, cut short: the client's bytes end inside it.
    fn cut(&mut self, input: &mut Input<'_>) -> Ending {
        let payload = vec![b'c'; input.below(120)];
        let mut frame = Vec::new();
        let mask = [input.byte(), input.byte(), input.byte(), input.byte()];
        encode(&mut frame, FIN | OP_TEXT, &payload, Some(mask), input.below(3));
        frame.truncate(input.below(frame.len()));
        self.wire.extend_from_slice(&frame);
        Ending::Closed
    }

    /// Appends one masked frame, the key and the length encoding read from `input`.
    fn frame(&mut self, input: &mut Input<'_>, first: u8, payload: &[u8]) {
        let mask = [input.byte(), input.byte(), input.byte(), input.byte()];
        let form = input.below(3);
        encode(&mut self.wire, first, payload, Some(mask), form);
    }
}

/// Appends a frame: `first` is its first byte (FIN, reserved bits, opcode); the length in
/// the shortest encoding that fits, or at least 16 bits (`form` 1) or 64 bits (`form` 2).
fn encode(wire: &mut Vec<u8>, first: u8, payload: &[u8], mask: Option<[u8; 4]>, form: usize) {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    wire.push(first);
    if len < 126 && form == 0 {
        wire.push(mask_bit | len as u8);
    } else if len <= usize::from(u16::MAX) && form <= 1 {
        wire.push(mask_bit | 126);
        wire.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        wire.push(mask_bit | 127);
        wire.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            wire.extend_from_slice(&key);
            wire.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => wire.extend_from_slice(payload),
    }
}

/// The frames a server sent: (opcode, payload). Panics on a frame a client could not read:
/// fragmented, masked, or cut short.
pub(super) fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 2, "a server frame cut short: {bytes:?}");
        assert_eq!(bytes[0] & 0xF0, FIN, "a server frame with reserved bits or without FIN");
        assert_eq!(bytes[1] & 0x80, 0, "a masked server frame");
        let (len, at) = match bytes[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => panic!("a server control frame with a 64-bit length"),
            n => (usize::from(n), 2),
        };
        assert!(bytes.len() >= at + len, "a server frame cut short");
        frames.push((bytes[0] & 0x0F, bytes[at..at + len].to_vec()));
        bytes = &bytes[at + len..];
    }
    frames
}
