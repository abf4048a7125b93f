//! The audience of a room or a chatroom, kept ready to hand to the driver.

use std::sync::Arc;

use roomkit_protocol::UserUuid;

/// Identifies one client connection. Chosen by the driver; core only compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Who receives one event: a shared list of connections, minus an optional one (the sender
/// of a broadcast does not receive its own message).
///
/// The list is shared with the room's roster, so building an audience is a reference-count
/// bump whatever the room's size.
#[derive(Debug, Clone)]
pub struct Audience {
    conns: Arc<Vec<ConnId>>,
    except: Option<ConnId>,
}

impl Audience {
    /// Exactly these connections.
    pub fn only(conns: Vec<ConnId>) -> Self {
        Self { conns: Arc::new(conns), except: None }
    }

    /// The receiving connections.
    pub fn iter(&self) -> impl Iterator<Item = ConnId> + '_ {
        let except = self.except;
        self.conns.iter().copied().filter(move |c| Some(*c) != except)
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

/// Members' connections in a dense array with O(1) insert and remove.
///
/// Each member remembers its slot; removing swaps the last entry into the hole and reports
/// whose slot moved. The array sits behind an `Arc` handed out as [`Audience`]; the driver
/// drops audiences before the next input, so `Arc::make_mut` does not copy in steady state.
#[derive(Debug, Default)]
pub(crate) struct Roster {
    conns: Arc<Vec<ConnId>>,
    users: Vec<UserUuid>,
}

impl Roster {
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    /// Adds a member; returns its slot.
    pub(crate) fn push(&mut self, user: UserUuid, conn: ConnId) -> usize {
        Arc::make_mut(&mut self.conns).push(conn);
        self.users.push(user);
        self.users.len() - 1
    }

    /// Removes the member at `slot`; returns the member now at `slot`, if one was moved there.
    pub(crate) fn remove(&mut self, slot: usize) -> Option<&UserUuid> {
        Arc::make_mut(&mut self.conns).swap_remove(slot);
        self.users.swap_remove(slot);
        self.users.get(slot)
    }

    /// Points the member at `slot` at another connection.
    pub(crate) fn set_conn(&mut self, slot: usize, conn: ConnId) {
        Arc::make_mut(&mut self.conns)[slot] = conn;
    }

    /// Members in slot order.
    pub(crate) fn users(&self) -> &[UserUuid] {
        &self.users
    }

    /// Everyone, or everyone but `except`.
    pub(crate) fn audience(&self, except: Option<ConnId>) -> Audience {
        Audience { conns: Arc::clone(&self.conns), except }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserUuid {
        s.parse().unwrap()
    }

    #[test]
    fn remove_reports_the_moved_member() {
        let mut r = Roster::default();
        assert_eq!(r.push(user("a"), ConnId(1)), 0);
        assert_eq!(r.push(user("b"), ConnId(2)), 1);
        assert_eq!(r.push(user("c"), ConnId(3)), 2);
        assert_eq!(r.remove(0), Some(&user("c")));
        assert_eq!(r.users(), &[user("c"), user("b")]);
        assert_eq!(r.remove(1), None);
        let a = r.audience(None);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![ConnId(3)]);
    }

    #[test]
    fn audience_excludes_one_and_survives_later_changes() {
        let mut r = Roster::default();
        r.push(user("a"), ConnId(1));
        r.push(user("b"), ConnId(2));
        let a = r.audience(Some(ConnId(1)));
        r.push(user("c"), ConnId(3)); // copy-on-write: `a` keeps its snapshot
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![ConnId(2)]);
        assert_eq!(a.len(), 1);
        assert_eq!(r.audience(None).len(), 3);
    }
}
