//! Just enough of RESP (the redis wire format) for the baseline: encoding a command and
//! reading the replies and pushes a subscriber or a publisher gets. Written here rather than
//! taken from a redis client crate so that the baseline's clients cost what roomkit's cost:
//! one read buffer per connection and a parse per frame, no extra layers.

/// One RESP value, borrowing its bytes from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resp<'a> {
    /// `+OK`
    Simple(&'a [u8]),
    /// `-ERR …`
    Error(&'a [u8]),
    /// `:42`
    Integer(i64),
    /// `$3 foo`, or `$-1` (none).
    Bulk(Option<&'a [u8]>),
    /// `*2 …`, or `*-1` (none).
    Array(Option<Vec<Resp<'a>>>),
}

/// Appends `args` to `out` as one command (an array of bulk strings).
pub(crate) fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses the value at the start of `buf`: `Ok(None)` when `buf` holds only part of it,
/// else the value and how many bytes it took.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Resp<'_>, usize)>, String> {
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else { return Ok(None) };
    let Some((&kind, line)) = buf[..line_end].split_first() else {
        return Err("empty RESP line".into());
    };
    let after_line = line_end + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad RESP number `{}`", String::from_utf8_lossy(line)))
    };
    match kind {
        b'+' => Ok(Some((Resp::Simple(line), after_line))),
        b'-' => Ok(Some((Resp::Error(line), after_line))),
        b':' => Ok(Some((Resp::Integer(number()?), after_line))),
        b'$' => {
            let Ok(len) = usize::try_from(number()?) else { return Ok(Some((Resp::Bulk(None), after_line))) };
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err("RESP bulk string without its CRLF".into());
            }
            Ok(Some((Resp::Bulk(Some(&buf[after_line..end])), end + 2)))
        }
        b'*' => {
            let Ok(count) = usize::try_from(number()?) else {
                return Ok(Some((Resp::Array(None), after_line)));
            };
            let mut items = Vec::with_capacity(count.min(16));
            let mut at = after_line;
            for _ in 0..count {
                let Some((item, used)) = parse(&buf[at..])? else { return Ok(None) };
                items.push(item);
                at += used;
            }
            Ok(Some((Resp::Array(Some(items)), at)))
        }
        other => Err(format!("unknown RESP type byte {other:#04x}")),
    }
}

/// What a subscriber's unread bytes start with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push<'a> {
    /// A whole pub/sub message `["message", channel, payload]`: its payload, and how many
    /// bytes the message took.
    Message(&'a [u8], usize),
    /// The start of one: more must be read.
    Partial,
    /// Any other value, which [`parse`] reads.
    Other,
}

/// The subscribers' path: the pub/sub message at the start of `buf`, its payload taken in
/// place with no array built (as roomkit's reader takes a frame's text).
pub(crate) fn message(buf: &[u8]) -> Push<'_> {
    const HEAD: &[u8] = b"*3\r\n$7\r\nmessage\r\n";
    let Some(rest) = buf.strip_prefix(HEAD) else {
        return if HEAD.starts_with(buf) { Push::Partial } else { Push::Other };
    };
    let at = match bulk(rest) {
        Bulk::Whole(_channel, at) => at,
        Bulk::Partial => return Push::Partial,
        Bulk::Other => return Push::Other,
    };
    match bulk(&rest[at..]) {
        Bulk::Whole(payload, used) => Push::Message(payload, HEAD.len() + at + used),
        Bulk::Partial => Push::Partial,
        Bulk::Other => Push::Other,
    }
}

/// What a buffer starts with, read as a bulk string (`$<len>\r\n<bytes>\r\n`).
enum Bulk<'a> {
    /// Its bytes, and how many bytes it took.
    Whole(&'a [u8], usize),
    Partial,
    /// Not a bulk string of bytes (a null one, say).
    Other,
}

/// Digits of the longest length [`bulk`] reads (`u64::MAX` has 20).
const LEN_DIGITS: usize = 19;

fn bulk(buf: &[u8]) -> Bulk<'_> {
    let Some(digits) = buf.strip_prefix(b"$") else {
        return if buf.is_empty() { Bulk::Partial } else { Bulk::Other };
    };
    let Some(line) = memchr::memchr(b'\r', digits) else {
        return if digits.len() <= LEN_DIGITS { Bulk::Partial } else { Bulk::Other };
    };
    let len = digits[..line].iter().try_fold(0usize, |n, &d| {
        d.is_ascii_digit().then_some(())?;
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    });
    let (Some(len), 1..=LEN_DIGITS) = (len, line) else { return Bulk::Other };
    match digits.get(line + 1) {
        None => return Bulk::Partial,
        Some(b'\n') => {}
        Some(_) => return Bulk::Other,
    }
    let start = 1 + line + 2;
    let Some(end) = start.checked_add(len) else { return Bulk::Other };
    match buf.get(end..end + 2) {
        None => Bulk::Partial,
        Some(b"\r\n") => Bulk::Whole(&buf[start..end], end + 2),
        Some(_) => Bulk::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of a pub/sub push `["message", channel, payload]`, if `value` is one.
    fn message_payload<'a>(value: &Resp<'a>) -> Option<&'a [u8]> {
        match value {
            Resp::Array(Some(items)) => match items.as_slice() {
                [Resp::Bulk(Some(b"message")), _, Resp::Bulk(Some(payload))] => Some(payload),
                _ => None,
            },
            _ => None,
        }
    }

    #[test]
    fn encodes_a_command() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"ch", b"hi"]);
        assert_eq!(out, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$2\r\nhi\r\n");
    }

    #[test]
    fn reads_a_subscribe_confirmation_and_a_message() {
        let buf =
            b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
        let (first, used) = parse(buf).unwrap().unwrap();
        assert_eq!(
            first,
            Resp::Array(Some(vec![
                Resp::Bulk(Some(b"subscribe")),
                Resp::Bulk(Some(b"ch")),
                Resp::Integer(1)
            ]))
        );
        assert_eq!(message_payload(&first), None);
        let (second, used2) = parse(&buf[used..]).unwrap().unwrap();
        assert_eq!(message_payload(&second), Some(&b"hello"[..]));
        assert_eq!(used + used2, buf.len());
    }

    #[test]
    fn takes_a_message_in_place_as_parse_reads_it() {
        let push = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$12\r\nhello\r\nthere\r\n:1\r\n";
        let whole = push.len() - 4;
        let (value, used) = parse(push).unwrap().unwrap();
        assert_eq!(message(push), Push::Message(message_payload(&value).unwrap(), used));
        assert_eq!(message(push), Push::Message(&b"hello\r\nthere"[..], whole));
        for cut in 0..whole {
            assert_eq!(message(&push[..cut]), Push::Partial, "cut at {cut}");
        }
        // Other values, for parse.
        assert_eq!(message(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"), Push::Other);
        assert_eq!(message(b"*3\r\n$9\r\nsubs"), Push::Other);
        assert_eq!(message(b":1\r\n"), Push::Other);
        // Not a message as redis writes one.
        assert_eq!(message(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$x\r\n"), Push::Other);
        assert_eq!(message(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nab\r\n"), Push::Other);
        assert_eq!(message(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$99999999999999999999\r\n"), Push::Other);
        assert_eq!(message(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$-1\r\n"), Push::Other);
    }

    #[test]
    fn waits_for_the_rest_of_a_value() {
        let buf = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn reads_integers_errors_and_nulls() {
        assert_eq!(parse(b":12\r\n"), Ok(Some((Resp::Integer(12), 5))));
        assert_eq!(parse(b"-ERR no\r\n"), Ok(Some((Resp::Error(b"ERR no"), 9))));
        assert_eq!(parse(b"$-1\r\n"), Ok(Some((Resp::Bulk(None), 5))));
        assert_eq!(parse(b"+OK\r\n"), Ok(Some((Resp::Simple(b"OK"), 5))));
        assert!(parse(b"?\r\n").is_err());
    }
}
