//! Typing notifications: who is typing where, until when. Held in memory only (they expire in
//! seconds), with their own serial (the sync token's second part). A change wakes the waiting
//! syncs of the room's members only: a server-wide wake-up for every keystroke pause would make
//! each typing notice cost one sync computation per connected client.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

use crate::{
    db::Database,
    stream::{Audience, Notifier},
};

/// Longest typing timeout a client may ask for.
const MAX_TYPING: Duration = Duration::from_secs(120);

pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    serial: watch::Sender<u64>,
    db: Arc<Database>,
    notifier: Arc<Notifier>,
}

#[derive(Default)]
struct RoomTyping {
    users: BTreeMap<OwnedUserId, Instant>,
    /// Serial of the last change in this room.
    changed: u64,
}

impl Typing {
    /// Serials start at the wall clock in milliseconds, so they keep increasing across restarts
    /// and a token from before a restart never hides newer typing changes.
    pub fn new(db: Arc<Database>, notifier: Arc<Notifier>) -> Self {
        let (serial, _) = watch::channel(crate::time::now_ms());
        Self { rooms: Mutex::new(HashMap::new()), serial, db, notifier }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.serial.subscribe()
    }

    pub fn current(&self) -> u64 {
        *self.serial.borrow()
    }

    fn bump(&self) -> u64 {
        let mut next = 0;
        self.serial.send_modify(|s| {
            *s += 1;
            next = *s;
        });
        next
    }

    /// Starts (`Some(timeout)`) or stops (`None`) a user's typing in a room. Only a change of who
    /// types is news to the room's members: a client renewing its notice every few seconds
    /// extends the timeout without waking anyone.
    pub fn set(&self, room: &RoomId, user: &UserId, timeout: Option<Duration>) {
        let changed = {
            let mut rooms = self.rooms.lock().expect("typing lock");
            let entry = rooms.entry(room.to_owned()).or_default();
            let changed = match timeout {
                Some(t) => entry.users.insert(user.to_owned(), Instant::now() + t.min(MAX_TYPING)).is_none(),
                None => entry.users.remove(user).is_some(),
            };
            if changed {
                entry.changed = self.bump();
            }
            changed
        };
        if changed {
            self.notifier.wake_audience(&self.db, &Audience::Room(room.to_owned()));
        }
    }

    /// Users typing in the room now, if the room changed after `since` (always when `None`).
    /// Expired entries are dropped (and count as a change).
    pub fn typing_in(&self, room: &RoomId, since: Option<u64>) -> Option<Vec<OwnedUserId>> {
        let mut rooms = self.rooms.lock().expect("typing lock");
        let entry = rooms.get_mut(room)?;
        let now = Instant::now();
        let before = entry.users.len();
        entry.users.retain(|_, until| *until > now);
        if entry.users.len() != before {
            entry.changed = self.bump();
        }
        if since.is_some_and(|s| entry.changed <= s) {
            return None;
        }
        Some(entry.users.keys().cloned().collect())
    }

    /// Whether any room has someone typing (expired entries not yet dropped included).
    pub fn anyone_typing(&self) -> bool {
        self.rooms.lock().expect("typing lock").values().any(|r| !r.users.is_empty())
    }

    /// The soonest expiry in these rooms, so a sync waiting for one of their members can wake to
    /// report it (expiries elsewhere are not its business).
    pub fn next_expiry_in<'a>(&self, rooms: impl IntoIterator<Item = &'a OwnedRoomId>) -> Option<Instant> {
        let typing = self.rooms.lock().expect("typing lock");
        rooms.into_iter().filter_map(|room| typing.get(room)).flat_map(|r| r.users.values().copied()).min()
    }
}

#[cfg(test)]
mod tests {
    use hemicycle_core::db::{codec::Json, Batch};
    use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};

    use super::*;
    use crate::rooms::tables::MembershipRecord;

    /// A typing change wakes the waiting syncs of the room's members and nobody else's, and a
    /// member's sync wakes for expiries in its own rooms only: typing in one room must not cost a
    /// sync computation for every connected client of the server.
    #[test]
    fn a_typing_change_wakes_the_rooms_members_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        let notifier = Arc::new(Notifier::default());
        let typing = Typing::new(db.clone(), notifier.clone());
        let user = |n: &str| OwnedUserId::try_from(format!("@{n}:localhost")).unwrap();
        let (bob_room, other_room) =
            (OwnedRoomId::try_from("!bob:localhost").unwrap(), OwnedRoomId::try_from("!other:localhost").unwrap());
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let mut batch = Batch::new();
        for (room, member) in [(&bob_room, &alice), (&bob_room, &bob), (&other_room, &carol)] {
            let record = MembershipRecord {
                membership: "join".into(),
                event_id: OwnedEventId::try_from("$join").unwrap(),
                pos: 1,
                joined_since: None,
            };
            db.tables.rooms.roomiduserid_membership.insert(&mut batch, &(room.clone(), member.clone()), &Json(record));
        }
        db.commit(batch).unwrap();

        let bob_notify = notifier.subscribe(&bob);
        let woken = bob_notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        typing.set(&other_room, &carol, Some(Duration::from_secs(30)));
        assert!(futures::FutureExt::now_or_never(woken.as_mut()).is_none(), "carol's room is not bob's business");
        assert!(typing.next_expiry_in([&bob_room]).is_none(), "no expiry to wait for in bob's rooms");
        typing.set(&bob_room, &alice, Some(Duration::from_secs(30)));
        assert!(futures::FutureExt::now_or_never(woken.as_mut()).is_some(), "alice typing wakes bob");
        assert!(typing.next_expiry_in([&bob_room]).is_some());

        let renewed = bob_notify.notified();
        tokio::pin!(renewed);
        renewed.as_mut().enable();
        typing.set(&bob_room, &alice, Some(Duration::from_secs(30)));
        assert!(futures::FutureExt::now_or_never(renewed.as_mut()).is_none(), "a renewal is no news");
        typing.set(&bob_room, &alice, None);
        assert!(futures::FutureExt::now_or_never(renewed.as_mut()).is_some(), "stopping is");
    }
}
