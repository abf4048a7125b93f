//! The audience of a room or a chatroom, kept ready to hand to the driver, and its members
//! in join order for paging.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use roomkit_protocol::UserUuid;

/// Identifies one client connection. Chosen by the driver; core only compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A map keyed by [`ConnId`], hashed with [`ConnIdHasher`]: the fan-out looks up one entry
/// per delivery.
pub type ConnMap<V> = HashMap<ConnId, V, BuildHasherDefault<ConnIdHasher>>;

/// Hashes a [`ConnId`] with one multiplication. Connection ids are chosen by the driver
/// (the server counts them up), not by clients, so there is nothing to defend against that
/// would need SipHash's keyed hashing; the multiplication by an odd constant spreads
/// consecutive ids over both the low bits (the bucket) and the high bits (the tag).
#[derive(Debug, Default, Clone, Copy)]
pub struct ConnIdHasher(u64);

impl Hasher for ConnIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Who receives one event: a shared list of connections, minus an optional one (the sender
/// of a broadcast does not receive its own message).
///
/// The list is shared with the room's roster, so building an audience is a reference-count
/// bump whatever the room's size.
#[derive(Debug, Clone)]
pub struct Audience {
    conns: Arc<Vec<ConnId>>,
    except: Option<ConnId>,
    roster: Option<RosterKind>,
}

/// Which of a room's two member lists an [`Audience`] is (see [`Audience::roster`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RosterKind {
    /// Everyone in the room.
    Room,
    /// Everyone in the room's chatroom.
    Chatroom,
}

impl Audience {
    /// Exactly these connections.
    pub fn only(conns: Vec<ConnId>) -> Self {
        Self { conns: Arc::new(conns), except: None, roster: None }
    }

    /// Whether this is a whole member list of the event's room (minus [`except`](Self::except))
    /// rather than connections picked one by one. A driver that keeps each room's lists
    /// elsewhere (from [`Output::Roster`](crate::Output::Roster)) can name the list instead of
    /// its connections.
    pub fn roster(&self) -> Option<RosterKind> {
        self.roster
    }

    /// The connection left out of the list, if any.
    pub fn except(&self) -> Option<ConnId> {
        self.except
    }

    /// The receiving connections.
    pub fn iter(&self) -> impl Iterator<Item = ConnId> + '_ {
        let except = self.except;
        self.conns.iter().copied().filter(move |c| Some(*c) != except)
    }

    /// The whole list, [`except`](Self::except) included: a driver that queues several
    /// events to one list at once walks it once and leaves out each event's `except` itself.
    pub fn list(&self) -> &[ConnId] {
        &self.conns
    }

    /// Whether `other` names the same list, unchanged (whatever each leaves out): outputs
    /// produced while a room's membership stays the same share their list.
    pub fn shares_list(&self, other: &Audience) -> bool {
        Arc::ptr_eq(&self.conns, &other.conns)
    }

    /// Number of receiving connections.
    pub fn len(&self) -> usize {
        let excluded = self.except.is_some_and(|e| self.conns.contains(&e));
        self.conns.len() - usize::from(excluded)
    }

    /// Whether nobody receives the event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Members' connections in a dense array with O(1) insert and remove, and the members in
/// join order for paging, O(log n) insert and remove.
///
/// Each member remembers its slot; removing swaps the last entry into the hole and reports
/// whose slot moved. The array sits behind an `Arc` handed out as [`Audience`]; the driver
/// drops audiences before the next input, so `Arc::make_mut` does not copy in steady state.
///
/// Each member also gets an order number, increasing with every insert and never reused:
/// a page is a range of the order map after the cursor (the last order number returned), so
/// it costs O(log n + limit), and a member present throughout a paging is returned once.
#[derive(Debug)]
pub(crate) struct Roster {
    kind: RosterKind,
    conns: Arc<Vec<ConnId>>,
    users: Vec<UserUuid>,
    order: BTreeMap<u64, UserUuid>,
    /// Order numbers handed out so far (the next one is this plus one).
    last_order: u64,
}

/// A member's place in a [`Roster`]: its slot in the audience array and its order number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) slot: usize,
    pub(crate) order: u64,
}

impl Roster {
    pub(crate) fn new(kind: RosterKind) -> Self {
        Self { kind, conns: Arc::default(), users: Vec::new(), order: BTreeMap::new(), last_order: 0 }
    }

    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// Adds a member last in join order; returns its place.
    pub(crate) fn push(&mut self, user: UserUuid, conn: ConnId) -> Place {
        Arc::make_mut(&mut self.conns).push(conn);
        self.last_order += 1;
        self.order.insert(self.last_order, user.clone());
        self.users.push(user);
        Place { slot: self.users.len() - 1, order: self.last_order }
    }

    /// Removes the member at `place`; returns the member now at its slot, if one was moved
    /// there.
    pub(crate) fn remove(&mut self, place: Place) -> Option<&UserUuid> {
        Arc::make_mut(&mut self.conns).swap_remove(place.slot);
        self.users.swap_remove(place.slot);
        self.order.remove(&place.order);
        self.users.get(place.slot)
    }

    /// Up to `limit` members in join order after order number `after` (0: from the first),
    /// and the order number of the last one returned when more follow.
    pub(crate) fn page(&self, after: u64, limit: usize) -> (Vec<&UserUuid>, Option<u64>) {
        let mut range = self.order.range(after.saturating_add(1)..);
        let page: Vec<(&u64, &UserUuid)> = range.by_ref().take(limit).collect();
        let more = range.next().is_some();
        let next = page.last().map(|(order, _)| **order).filter(|_| more);
        (page.into_iter().map(|(_, user)| user).collect(), next)
    }

    /// Whether `order` is an order number this roster handed out (so a cursor made of it is
    /// one the server made).
    pub(crate) fn issued(&self, order: u64) -> bool {
        order <= self.last_order
    }

    /// Members in join order.
    pub(crate) fn in_join_order(&self) -> impl Iterator<Item = &UserUuid> {
        self.order.values()
    }

    /// Points the member at `slot` at another connection.
    pub(crate) fn set_conn(&mut self, slot: usize, conn: ConnId) {
        Arc::make_mut(&mut self.conns)[slot] = conn;
    }

    /// Members in slot order.
    #[cfg(test)]
    pub(crate) fn users(&self) -> &[UserUuid] {
        &self.users
    }

    /// Everyone, or everyone but `except`.
    pub(crate) fn audience(&self, except: Option<ConnId>) -> Audience {
        Audience { conns: Arc::clone(&self.conns), except, roster: Some(self.kind) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserUuid {
        s.parse().unwrap()
    }

    #[test]
    fn consecutive_connection_ids_spread_over_buckets_and_tags() {
        use std::hash::BuildHasher;
        let build = BuildHasherDefault::<ConnIdHasher>::default();
        let hashes: Vec<u64> = (5000..5000 + 1024).map(|n| build.hash_one(ConnId(n))).collect();
        // A table of 1024 buckets indexes by the low bits: every id gets its own.
        let buckets: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert_eq!(buckets.len(), 1024);
        // The top 7 bits (the control tag) take many values, not one.
        let tags: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(tags.len() > 100, "{} tags", tags.len());
    }

    #[test]
    fn audiences_share_their_list_until_the_membership_changes() {
        let mut r = Roster::new(RosterKind::Chatroom);
        r.push(user("a"), ConnId(1));
        r.push(user("b"), ConnId(2));
        let (all, but_a) = (r.audience(None), r.audience(Some(ConnId(1))));
        assert!(all.shares_list(&but_a));
        assert_eq!(but_a.list(), &[ConnId(1), ConnId(2)]);
        assert_eq!(but_a.iter().collect::<Vec<_>>(), vec![ConnId(2)]);
        // A join while those audiences are held copies the list: later ones name another.
        r.push(user("c"), ConnId(3));
        let after = r.audience(None);
        assert!(!after.shares_list(&all));
        assert_eq!(all.list(), &[ConnId(1), ConnId(2)]);
        assert!(!Audience::only(vec![ConnId(1)]).shares_list(&Audience::only(vec![ConnId(1)])));
    }

    #[test]
    fn remove_reports_the_moved_member() {
        let mut r = Roster::new(RosterKind::Room);
        let a = r.push(user("a"), ConnId(1));
        assert_eq!(a, Place { slot: 0, order: 1 });
        let b = r.push(user("b"), ConnId(2));
        assert_eq!(b, Place { slot: 1, order: 2 });
        assert_eq!(r.push(user("c"), ConnId(3)), Place { slot: 2, order: 3 });
        assert_eq!(r.remove(a), Some(&user("c")));
        assert_eq!(r.users(), &[user("c"), user("b")]);
        assert_eq!(r.remove(Place { slot: 1, order: b.order }), None);
        let a = r.audience(None);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![ConnId(3)]);
    }

    #[test]
    fn pages_follow_join_order_and_skip_the_departed() {
        let mut r = Roster::new(RosterKind::Room);
        let places: Vec<Place> = ["a", "b", "c", "d"].iter().map(|u| r.push(user(u), ConnId(0))).collect();
        let (page, next) = r.page(0, 2);
        assert_eq!(page, vec![&user("a"), &user("b")]);
        assert_eq!(next, Some(2));
        r.remove(places[2]); // c leaves between pages
        r.push(user("e"), ConnId(0)); // e joins between pages
        let (page, next) = r.page(2, 2);
        assert_eq!(page, vec![&user("d"), &user("e")]);
        assert_eq!(next, None);
        assert!(r.issued(5) && !r.issued(6));
        let all: Vec<_> = r.in_join_order().collect();
        assert_eq!(all, vec![&user("a"), &user("b"), &user("d"), &user("e")]);
    }

    #[test]
    fn audience_excludes_one_and_survives_later_changes() {
        let mut r = Roster::new(RosterKind::Room);
        r.push(user("a"), ConnId(1));
        r.push(user("b"), ConnId(2));
        let a = r.audience(Some(ConnId(1)));
        r.push(user("c"), ConnId(3)); // copy-on-write: `a` keeps its snapshot
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![ConnId(2)]);
        assert_eq!(a.len(), 1);
        assert_eq!(r.audience(None).len(), 3);
    }
}
