//! What nodes send each other on NATS: a forwarded request (node → a room's owner) and the
//! records of a room's stream (owner → every node with members in the room).
//!
//! Both are small binary layouts with the client-facing JSON inside as is: a forwarded request
//! carries the request frame the client sent, byte for byte, and a stream record carries the
//! frame text the owner encoded once for the event or answer. Every integer is big-endian.

use bytes::Bytes;
use roomkit_core::{ConnId, Grants, Identity, RoomGrant, RosterKind};
use roomkit_protocol::RoomUuid;

/// Why a buffer is not a valid record or request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad cluster message: {0}")]
pub(crate) struct WireError(pub(crate) &'static str);

/// A request a node hands to the owner of its room, or the news that a connection is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Forward {
    /// A request of a logged-in connection: the frame it sent, unchanged. `expect` is the slot
    /// of the node the sender last knew as the room's owner (0: none): a connection that
    /// joined under another owner is not a member of this one's room.
    Request { conn: ConnId, expect: u16, identity: Identity, frame: Bytes },
    /// The connection is gone: the owner treats it as a disconnect.
    Gone { conn: ConnId },
}

const FORWARD_REQUEST: u8 = 1;
const FORWARD_GONE: u8 = 2;

impl Forward {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Forward::Request { conn, expect, identity, frame } => {
                out.push(FORWARD_REQUEST);
                out.extend_from_slice(&conn.0.to_be_bytes());
                out.extend_from_slice(&expect.to_be_bytes());
                put_str(&mut out, identity.user.as_str());
                put_str(&mut out, &identity.name);
                let g = &identity.grants;
                out.push(u8::from(g.create_rooms) | u8::from(g.room_admin) << 1);
                match &g.join {
                    RoomGrant::All => out.extend_from_slice(&u32::MAX.to_be_bytes()),
                    RoomGrant::Only(rooms) => {
                        out.extend_from_slice(&(rooms.len() as u32).to_be_bytes());
                        for room in rooms {
                            put_str(&mut out, room.as_str());
                        }
                    }
                }
                out.extend_from_slice(frame);
            }
            Forward::Gone { conn } => {
                out.push(FORWARD_GONE);
                out.extend_from_slice(&conn.0.to_be_bytes());
            }
        }
        out
    }

    pub(crate) fn decode(bytes: &Bytes) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        match r.u8()? {
            FORWARD_REQUEST => {
                let conn = ConnId(r.u64()?);
                let expect = r.u16()?;
                let user = r.str()?.parse().map_err(|_| WireError("bad user id"))?;
                let name = r.str()?.to_owned();
                let flags = r.u8()?;
                let join = match r.u32()? {
                    u32::MAX => RoomGrant::All,
                    n => RoomGrant::Only(
                        (0..n)
                            .map(|_| r.str()?.parse::<RoomUuid>().map_err(|_| WireError("bad room id")))
                            .collect::<Result<_, _>>()?,
                    ),
                };
                let grants = Grants { create_rooms: flags & 1 != 0, join, room_admin: flags & 2 != 0 };
                Ok(Forward::Request {
                    conn,
                    expect,
                    identity: Identity { user, name, grants },
                    frame: r.rest(bytes),
                })
            }
            FORWARD_GONE => Ok(Forward::Gone { conn: ConnId(r.u64()?) }),
            _ => Err(WireError("unknown forward kind")),
        }
    }
}

/// How a delivered frame may be shed by a slow connection (the outbox's `Shed`, without the
/// room, which the record's subject names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShedClass {
    Keep,
    Droppable,
    Conflate,
}

/// One entry of a room's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// An answer for one connection.
    Reply { conn: ConnId, text: Bytes },
    /// An event for a whole member list, minus one connection; `message`: a chat message
    /// (counted in `roomkit_messages_out_total` where it is delivered).
    ToRoster { roster: RosterKind, except: Option<ConnId>, shed: ShedClass, message: bool, text: Bytes },
    /// An event for these connections; `message` as in `ToRoster` (the record's kind).
    ToConns { conns: Vec<ConnId>, shed: ShedClass, message: bool, text: Bytes },
    /// A connection entered or left a member list.
    Roster { roster: RosterKind, conn: ConnId, present: bool },
    /// The room ended: its lists are gone.
    Ended,
    /// The room left its node without ending (its lease went to another node): its members
    /// must resume with the next owner.
    Moved,
}

const REPLY: u8 = 1;
const TO_ROSTER: u8 = 2;
const TO_CONNS: u8 = 3;
const ROSTER: u8 = 4;
const ENDED: u8 = 5;
const MOVED: u8 = 6;

/// `ToConns` for a chat message: the same layout under its own kind, which a node that reads
/// `TO_CONNS` alone reports as unknown rather than misreading.
const TO_CONNS_MESSAGE: u8 = 7;

/// A `ToRoster` record's flags byte: the bit of a given connection left out...
const HAS_EXCEPT: u8 = 1;
/// ...and the bit of a chat message. (Other bits are ignored. A node that read the byte as a
/// yes-or-no for the connection left out takes a chat message to everyone as one leaving out
/// connection 0, which no connection is.)
const MESSAGE: u8 = 2;

fn roster_byte(r: RosterKind) -> u8 {
    match r {
        RosterKind::Room => 0,
        RosterKind::Chatroom => 1,
    }
}

fn shed_byte(s: ShedClass) -> u8 {
    match s {
        ShedClass::Keep => 0,
        ShedClass::Droppable => 1,
        ShedClass::Conflate => 2,
    }
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::Reply { conn, text } => {
                out.push(REPLY);
                out.extend_from_slice(&conn.0.to_be_bytes());
                out.extend_from_slice(text);
            }
            Record::ToRoster { roster, except, shed, message, text } => {
                out.push(TO_ROSTER);
                out.push(roster_byte(*roster));
                out.push(shed_byte(*shed));
                out.push((u8::from(except.is_some()) * HAS_EXCEPT) | (u8::from(*message) * MESSAGE));
                out.extend_from_slice(&except.map_or(0, |c| c.0).to_be_bytes());
                out.extend_from_slice(text);
            }
            Record::ToConns { conns, shed, message, text } => {
                out.push(if *message { TO_CONNS_MESSAGE } else { TO_CONNS });
                out.push(shed_byte(*shed));
                out.extend_from_slice(&(conns.len() as u32).to_be_bytes());
                for c in conns {
                    out.extend_from_slice(&c.0.to_be_bytes());
                }
                out.extend_from_slice(text);
            }
            Record::Roster { roster, conn, present } => {
                out.push(ROSTER);
                out.push(roster_byte(*roster));
                out.push(u8::from(*present));
                out.extend_from_slice(&conn.0.to_be_bytes());
            }
            Record::Ended => out.push(ENDED),
            Record::Moved => out.push(MOVED),
        }
        out
    }

    pub(crate) fn decode(bytes: &Bytes) -> Result<Self, WireError> {
        let mut r = Reader(bytes);
        Ok(match r.u8()? {
            REPLY => Record::Reply { conn: ConnId(r.u64()?), text: r.rest(bytes) },
            TO_ROSTER => {
                let roster = r.roster()?;
                let shed = r.shed()?;
                let flags = r.u8()?;
                let except = ConnId(r.u64()?);
                Record::ToRoster {
                    roster,
                    except: (flags & HAS_EXCEPT != 0).then_some(except),
                    shed,
                    message: flags & MESSAGE != 0,
                    text: r.rest(bytes),
                }
            }
            kind @ (TO_CONNS | TO_CONNS_MESSAGE) => {
                let message = kind == TO_CONNS_MESSAGE;
                let shed = r.shed()?;
                let n = r.u32()? as usize;
                if n > r.0.len() / 8 {
                    return Err(WireError("connection count past the end"));
                }
                let conns = (0..n).map(|_| r.u64().map(ConnId)).collect::<Result<_, _>>()?;
                Record::ToConns { conns, shed, message, text: r.rest(bytes) }
            }
            ROSTER => {
                let roster = r.roster()?;
                let present = r.u8()? != 0;
                Record::Roster { roster, conn: ConnId(r.u64()?), present }
            }
            ENDED => Record::Ended,
            MOVED => Record::Moved,
            _ => return Err(WireError("unknown record kind")),
        })
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    /// What is left of `whole` (the buffer this reader reads), without copying.
    fn rest(&self, whole: &Bytes) -> Bytes {
        whole.slice(whole.len() - self.0.len()..)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn str(&mut self) -> Result<&'a str, WireError> {
        let n = u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")) as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| WireError("not UTF-8"))
    }

    fn roster(&mut self) -> Result<RosterKind, WireError> {
        match self.u8()? {
            0 => Ok(RosterKind::Room),
            1 => Ok(RosterKind::Chatroom),
            _ => Err(WireError("unknown member list")),
        }
    }

    fn shed(&mut self) -> Result<ShedClass, WireError> {
        match self.u8()? {
            0 => Ok(ShedClass::Keep),
            1 => Ok(ShedClass::Droppable),
            2 => Ok(ShedClass::Conflate),
            _ => Err(WireError("unknown shedding class")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_forwards_come_back_as_they_went() {
        let records = [
            Record::Reply { conn: ConnId(7 << 48 | 3), text: Bytes::from_static(b"{\"id\":1}") },
            Record::ToRoster {
                roster: RosterKind::Chatroom,
                except: Some(ConnId(9)),
                shed: ShedClass::Droppable,
                message: true,
                text: Bytes::from_static(b"{}"),
            },
            Record::ToRoster {
                roster: RosterKind::Room,
                except: None,
                shed: ShedClass::Conflate,
                message: false,
                text: Bytes::new(),
            },
            Record::ToRoster {
                roster: RosterKind::Chatroom,
                except: None,
                shed: ShedClass::Keep,
                message: true,
                text: Bytes::from_static(b"{}"),
            },
            Record::ToConns {
                conns: vec![ConnId(2)],
                shed: ShedClass::Droppable,
                message: false,
                text: Bytes::from_static(b"y"),
            },
            Record::ToConns {
                conns: vec![ConnId(1), ConnId(u64::MAX)],
                shed: ShedClass::Keep,
                message: true,
                text: Bytes::from_static(b"x"),
            },
            Record::Roster { roster: RosterKind::Room, conn: ConnId(5), present: true },
            Record::Ended,
            Record::Moved,
        ];
        for record in records {
            assert_eq!(Record::decode(&Bytes::from(record.encode())), Ok(record));
        }
        let mut identity = Identity::unrestricted("alice".parse().unwrap());
        identity.name = "Alice".into();
        identity.grants.join = RoomGrant::Only(vec!["r.1~x".parse().unwrap()]);
        identity.grants.room_admin = true;
        let forwards = [
            Forward::Request {
                conn: ConnId(42),
                expect: 7,
                identity,
                frame: Bytes::from_static(b"{\"id\":3,\"op\":\"ping\"}"),
            },
            Forward::Gone { conn: ConnId(43) },
        ];
        for forward in forwards {
            assert_eq!(Forward::decode(&Bytes::from(forward.encode())), Ok(forward));
        }
    }

    #[test]
    fn damaged_input_is_an_error_not_a_panic() {
        let good = Record::ToConns {
            conns: vec![ConnId(1)],
            shed: ShedClass::Keep,
            message: false,
            text: Bytes::from_static(b"x"),
        }
        .encode();
        for cut in 0..good.len() - 1 {
            let _ = Record::decode(&Bytes::copy_from_slice(&good[..cut]));
        }
        assert!(Record::decode(&Bytes::from_static(&[TO_CONNS, 0, 0xff, 0xff, 0xff, 0xff])).is_err());
        assert!(Record::decode(&Bytes::from_static(&[99])).is_err());
        assert!(Forward::decode(&Bytes::from_static(&[FORWARD_REQUEST, 0, 0])).is_err());
    }
}
