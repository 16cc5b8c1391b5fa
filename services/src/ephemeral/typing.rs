//! Typing notifications: who is typing where, until when. Held in memory only (they expire in
//! seconds), with their own serial and notification so a change wakes waiting syncs.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::watch;

/// Longest typing timeout a client may ask for.
const MAX_TYPING: Duration = Duration::from_secs(120);

pub struct Typing {
    rooms: Mutex<HashMap<OwnedRoomId, RoomTyping>>,
    serial: watch::Sender<u64>,
}

#[derive(Default)]
struct RoomTyping {
    users: BTreeMap<OwnedUserId, Instant>,
    /// Serial of the last change in this room.
    changed: u64,
}

impl Default for Typing {
    fn default() -> Self {
        Self::new()
    }
}

impl Typing {
    /// Serials start at the wall clock in milliseconds, so they keep increasing across restarts
    /// and a token from before a restart never hides newer typing changes.
    pub fn new() -> Self {
        let (serial, _) = watch::channel(crate::time::now_ms());
        Self { rooms: Mutex::new(HashMap::new()), serial }
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

    /// Starts (`Some(timeout)`) or stops (`None`) a user's typing in a room.
    pub fn set(&self, room: &RoomId, user: &UserId, timeout: Option<Duration>) {
        let mut rooms = self.rooms.lock().expect("typing lock");
        let entry = rooms.entry(room.to_owned()).or_default();
        let changed = match timeout {
            Some(t) => entry.users.insert(user.to_owned(), Instant::now() + t.min(MAX_TYPING)).is_none(),
            None => entry.users.remove(user).is_some(),
        };
        if changed || timeout.is_some() {
            entry.changed = self.bump();
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

    /// The soonest expiry, so a waiting sync can wake to report it.
    pub fn next_expiry(&self) -> Option<Instant> {
        let rooms = self.rooms.lock().expect("typing lock");
        rooms.values().flat_map(|r| r.users.values().copied()).min()
    }
}
