//! Target `registry`: core's `RoomRegistry`, the sans-IO state machine behind every shard,
//! driven by a program read from the fuzz bytes.
//!
//! Five connections (four accounts, one of them on two connections; one account may act as
//! host anywhere, one may not create rooms and may join one room only) send every room and
//! chatroom operation, and raw frames decoded by the codec; connections drop and come back;
//! time moves by steps around every timer (reconnect grace, idle rooms, presence digests,
//! rate buckets); the driver takes commits when it likes (one in flight at a time, or up to
//! three, as a shard whose commits go through the committer), reports them in order as
//! stored or failed later, in between or never until the end — a commit of an epoch that
//! failed is refused unapplied, as the committer does — and drains outputs at any point, as
//! a pipelined shard does; the backend ends rooms, creates them and sends messages; the server restarts,
//! bringing its rooms back from what was stored (`disk.rs`), as its shards do. The first byte
//! picks the configuration: small limits throughout, with or without reconnect grace, rate
//! limits, presence digests and several commits in flight.
//!
//! After every step (`checks.rs`): every answer answers a request that is waiting, once;
//! every delivery goes to distinct, known connections, and each sees a room's chatroom
//! messages in rising order; no message is delivered or acknowledged before the commit that
//! stores it is reported stored, no ephemeral message is stored, and a room's stored messages
//! have rising numbers, across restarts too; each room's counts equal its member lists, the
//! chatroom's members are room members, and paging through either list gives the list. At
//! the end, with every commit stored and outputs drained, no request is left unanswered; once
//! every connection is gone and the timers have run, no room and no member is left.

mod checks;
mod disk;
mod requests;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use roomkit_core::{
    store::{StoreError, StoreOp},
    ConnId, CoreConfig, Grants, Identity, MessageRate, RoomGrant, RoomRegistry,
};
use roomkit_protocol::{
    codec::decode_request,
    ops::{CreateRoom, Request},
    EndReason, MessageUuid, RoomUuid, UserUuid,
};

use crate::input::Input;

/// Most steps one input runs: a program longer than this is cut.
const MAX_STEPS: usize = 256;

/// The time the program starts at (milliseconds since the Unix epoch).
const START: u64 = 1_767_261_640_000;

/// Runs one input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let bits = input.byte();
    let mut sim = Sim::new(config(bits), if bits & 16 != 0 { 3 } else { 1 });
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        sim.step(&mut input);
        sim.check_rooms();
    }
    sim.finish();
}

/// The registry's configuration: small limits, and the switches `bits` picks.
fn config(bits: u8) -> CoreConfig {
    let mut c = CoreConfig::default();
    c.max_room_name_chars = 8;
    c.max_password_chars = 8;
    c.max_user_name_chars = 8;
    c.max_avatar_bytes = 32;
    c.max_property_key_bytes = 8;
    c.max_property_value_bytes = 8;
    c.max_properties = 2;
    c.max_message_bytes = 16;
    c.max_recipients = 2;
    c.history_ring_size = 4;
    c.room_idle_timeout_ms = 60_000;
    c.ended_rooms_remembered = 2;
    c.dedupe_window = 2;
    c.reconnect_grace_ms = if bits & 1 != 0 { 5_000 } else { 0 };
    c.recall_window_ms = 2_000;
    c.join_member_page = 2;
    if bits & 2 != 0 {
        c.presence_per_member_max = 2;
        c.presence_count_only_min = 3;
        c.presence_digest_ms = 500;
        c.presence_digest_names = 1;
        c.presence_hysteresis_percent = if bits & 8 != 0 { 50 } else { 0 };
    }
    if bits & 4 != 0 {
        c.member_message_rate = MessageRate { per_second: 2, burst: 3 };
        c.chatroom_message_rate = MessageRate { per_second: 3, burst: 4 };
    } else {
        c.member_message_rate = MessageRate::UNLIMITED;
        c.chatroom_message_rate = MessageRate::UNLIMITED;
    }
    c.check().expect("the target's configuration is valid");
    c
}

/// A chatroom message as a commit stores it.
type StoredMessage = (RoomUuid, u64, MessageUuid);

/// A request waiting for its answer.
#[derive(Debug)]
struct Pending {
    op: &'static str,
    room: Option<RoomUuid>,
}

/// One of the program's connections: its current connection id and its account.
#[derive(Debug)]
struct Slot {
    conn: ConnId,
    identity: Identity,
}

/// The registry and everything the checks remember about what it said.
#[derive(Debug)]
pub(crate) struct Sim {
    reg: RoomRegistry,
    now: u64,
    slots: Vec<Slot>,
    /// The account of every connection ever opened.
    users: HashMap<ConnId, UserUuid>,
    next_conn: u64,
    next_request: u64,
    pending: BTreeMap<(ConnId, u64), Pending>,
    /// The commits taken and not yet reported, oldest first, with the registry's commit
    /// epoch when each was taken.
    in_flight: VecDeque<(Vec<StoreOp>, u64)>,
    /// Most commits in flight.
    max_in_flight: usize,
    /// The epoch of the last commit the store failed: its later commits of that epoch are
    /// refused unapplied, as the server's committer does.
    failed_epoch: Option<u64>,
    /// Every commit reported stored.
    disk: disk::Disk,
    /// The messages of every commit reported stored.
    stored: HashSet<StoredMessage>,
    /// The newest chatroom message seq each connection has been sent, per room.
    last_seq: HashMap<(ConnId, RoomUuid), u64>,
    /// `next_cursor`s of member pages answered so far.
    cursors: Vec<String>,
    /// Print each request and output (`ROOMKIT_FUZZ_TRACE` set): for reading a crash.
    trace: bool,
}

fn user(name: &str) -> UserUuid {
    name.parse().expect("a valid user id")
}

fn room(name: &str) -> RoomUuid {
    name.parse().expect("a valid room id")
}

impl Sim {
    fn new(config: CoreConfig, max_in_flight: usize) -> Self {
        let admin = Grants { room_admin: true, ..Grants::default() };
        let restricted =
            Grants { create_rooms: false, join: RoomGrant::Only(vec![room("r0")]), room_admin: false };
        let identities = [
            Identity::unrestricted(user("u0")),
            Identity::unrestricted(user("u1")),
            Identity { grants: admin, ..Identity::unrestricted(user("u2")) },
            Identity { grants: restricted, ..Identity::unrestricted(user("u3")) },
            // The first account's second device.
            Identity::unrestricted(user("u0")),
        ];
        let mut sim = Sim {
            reg: RoomRegistry::new(config).with_commits_in_flight(max_in_flight),
            now: START,
            slots: Vec::new(),
            users: HashMap::new(),
            next_conn: 1,
            next_request: 1,
            pending: BTreeMap::new(),
            in_flight: VecDeque::new(),
            max_in_flight,
            failed_epoch: None,
            disk: disk::Disk::default(),
            stored: HashSet::new(),
            last_seq: HashMap::new(),
            cursors: Vec::new(),
            trace: std::env::var_os("ROOMKIT_FUZZ_TRACE").is_some(),
        };
        for identity in identities {
            let conn = sim.open(&identity.user);
            sim.slots.push(Slot { conn, identity });
        }
        sim
    }

    /// A new connection id for `user`.
    fn open(&mut self, user: &UserUuid) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.users.insert(conn, user.clone());
        conn
    }

    /// One step of the program.
    fn step(&mut self, input: &mut Input<'_>) {
        match input.below(16) {
            0..=7 => {
                let slot = input.below(self.slots.len());
                let frame = requests::request(input, &self.cursors, self.now);
                let bytes = serde_json::to_vec(&frame).expect("JSON");
                match decode_request(&bytes) {
                    Ok(decoded) => self.request(slot, decoded.request),
                    Err(e) => panic!("a valid request was refused: {e}\n{frame}"),
                }
            }
            8 => {
                // Any frame at all: what decodes is handled like any request.
                let slot = input.below(self.slots.len());
                if let Ok(decoded) = decode_request(input.bytes(160)) {
                    self.request(slot, decoded.request);
                }
            }
            9 => {
                let slot = input.below(self.slots.len());
                let gone = self.slots[slot].conn;
                self.reg.handle_disconnect(self.now, gone);
                let user = self.slots[slot].identity.user.clone();
                self.slots[slot].conn = self.open(&user);
            }
            10 => {
                let grace = self.reg.config().reconnect_grace_ms;
                let idle = self.reg.config().room_idle_timeout_ms;
                let steps = [1, 250, 499, 500, 501, 999, 1_000, 2_001, grace, grace + 1, idle, idle + 1];
                self.now += *input.pick(&steps);
                if self.reg.poll_timeout().is_some_and(|due| due <= self.now) {
                    self.reg.handle_timeout(self.now);
                }
            }
            11 => self.reg.handle_timeout(self.now),
            12 => self.take_commit(),
            13 => self.report_commit(input.below(4) != 0),
            14 => self.drain(),
            _ => self.backend(input),
        }
    }

    /// Request `request` from the connection in `slot`, under a fresh request id.
    fn request(&mut self, slot: usize, request: Request) {
        let (conn, identity) = (self.slots[slot].conn, self.slots[slot].identity.clone());
        let id = self.next_request;
        self.next_request += 1;
        if self.trace {
            eprintln!("t={} {conn:?} #{id} {request:?}", self.now - START);
        }
        let pending = Pending { op: request.op(), room: request.room_uuid().cloned() };
        self.pending.insert((conn, id), pending);
        self.reg.handle_request(self.now, conn, &identity, id, request);
    }

    /// What the application's backend or an operator does.
    fn backend(&mut self, input: &mut Input<'_>) {
        let target: RoomUuid = input.pick(requests::ROOMS).parse().expect("a valid room id");
        match input.below(4) {
            0 => {
                let reason = *input.pick(&[EndReason::CloseByBackend, EndReason::EndOfLife]);
                let _ = self.reg.close_room(&target, reason);
            }
            1 => {
                let text = input.pick(requests::TEXTS).to_string();
                let _ = self.reg.send_backend_message(self.now, &target, user("u9"), "ops".into(), text);
            }
            3 => {
                let reached = input.below(self.in_flight.len() + 1);
                self.restart(reached);
            }
            _ => {
                let create = CreateRoom {
                    room_uuid: target,
                    room_name: "backend".into(),
                    template_id: None,
                    max_members: None,
                    password: None,
                    initial_room_properties: Default::default(),
                    enable_chatroom: input.flag(),
                };
                let _ = self.reg.create_room(self.now, &Identity::unrestricted(user("u9")), create);
            }
        }
    }

    /// Takes the pending commit, unless as many as the registry allows are in flight.
    fn take_commit(&mut self) {
        if self.in_flight.len() >= self.max_in_flight {
            assert!(self.reg.take_commit().is_empty(), "more commits in flight than allowed");
            return;
        }
        let epoch = self.reg.commit_epoch();
        let ops = self.reg.take_commit();
        if ops.is_empty() {
            return;
        }
        if self.trace {
            eprintln!("  commit taken: {}", describe(&ops));
        }
        for op in &ops {
            if let StoreOp::Append { message, .. } = op {
                assert!(message.seq > 0 && message.persist, "an ephemeral message stored: {message:?}");
            }
        }
        self.in_flight.push_back((ops, epoch));
    }

    /// Whether the store applies a commit taken at `epoch`: not after a failed commit of the
    /// same epoch.
    fn applies(&self, epoch: u64) -> bool {
        self.failed_epoch != Some(epoch)
    }

    /// `ops` are durable: on the disk, and their messages may be delivered and acknowledged.
    fn stored(&mut self, ops: &[StoreOp]) {
        self.disk.apply(ops);
        for op in ops {
            if let StoreOp::Append { room, message } = op {
                self.stored.insert((room.clone(), message.seq, message.message_uuid.clone()));
            }
        }
    }

    /// Reports the oldest commit in flight as the store would have it: `stored`, unless it
    /// is refused for a failed epoch (with none in flight, reports nothing to report).
    fn report_commit(&mut self, stored: bool) {
        let Some((ops, epoch)) = self.in_flight.pop_front() else {
            self.reg.handle_commit(Ok(()));
            return;
        };
        let applies = self.applies(epoch);
        let stored = stored && applies;
        if !stored && applies {
            self.failed_epoch = Some(epoch);
        }
        let result = if stored { Ok(()) } else { Err(StoreError("disk full".into())) };
        self.reg.handle_commit(result);
        if self.trace {
            eprintln!(
                "  commit {}",
                if stored {
                    "stored"
                } else if applies {
                    "failed"
                } else {
                    "refused"
                }
            );
        }
        if stored {
            self.stored(&ops);
        }
    }

    /// The server stops and starts again: the first `reached` commits in flight reached the
    /// disk (those the store applies), the others not; the connections and their waiting
    /// requests are gone, and the rooms come back from the disk into a new registry. Every
    /// client connects again.
    fn restart(&mut self, reached: usize) {
        if self.trace {
            eprintln!("restart ({reached} of the commits in flight reached the disk)");
        }
        for (ops, epoch) in std::mem::take(&mut self.in_flight).into_iter().take(reached) {
            if self.applies(epoch) {
                self.stored(&ops);
            }
        }
        self.failed_epoch = None;
        self.reg = RoomRegistry::new(self.reg.config().clone()).with_commits_in_flight(self.max_in_flight);
        self.disk.restore(&mut self.reg, self.now);
        self.pending.clear();
        self.last_seq.clear();
        for slot in 0..self.slots.len() {
            let user = self.slots[slot].identity.user.clone();
            self.slots[slot].conn = self.open(&user);
        }
    }

    /// Drains every output that is ready.
    fn drain(&mut self) {
        while let Some(output) = self.reg.poll_output() {
            if self.trace {
                eprintln!("  -> {output:?}");
            }
            self.on_output(output);
        }
    }

    /// Stores every commit, drains, and repeats until nothing is left; then checks that every
    /// request was answered. Then every connection goes and time runs out every timer: no
    /// room and no member may be left.
    fn finish(&mut self) {
        self.settle();
        let waiting: Vec<_> = self.pending.iter().collect();
        assert!(waiting.is_empty(), "requests never answered: {waiting:?}");
        for slot in 0..self.slots.len() {
            self.reg.handle_disconnect(self.now, self.slots[slot].conn);
        }
        for _ in 0..64 {
            match self.reg.poll_timeout() {
                Some(due) => {
                    self.now = self.now.max(due);
                    self.reg.handle_timeout(self.now);
                    self.settle();
                    self.check_rooms();
                }
                None => break,
            }
        }
        assert_eq!(self.reg.member_counts(), (0, 0), "members left after every connection went");
        let left: Vec<_> = self.reg.rooms().map(|r| r.room_uuid.to_string()).collect();
        assert!(left.is_empty(), "rooms never ended after their members went: {left:?}");
    }

    /// Stores every commit and drains every output.
    fn settle(&mut self) {
        for _ in 0..8 * self.max_in_flight {
            self.report_commit(true);
            self.drain();
            self.take_commit();
            if self.in_flight.is_empty() {
                return;
            }
        }
        panic!("outputs never drained: every drain queued another commit");
    }
}

/// A commit in a line, for traces.
fn describe(ops: &[StoreOp]) -> String {
    let op = |op: &StoreOp| match op {
        StoreOp::Append { room, message } => {
            format!("append {room} #{} {}", message.seq, message.message_uuid)
        }
        StoreOp::PutRoom(record) => format!("put {}", record.info.room_uuid),
        StoreOp::DeleteRoom(room) => format!("delete {room}"),
    };
    ops.iter().map(op).collect::<Vec<_>>().join(", ")
}
