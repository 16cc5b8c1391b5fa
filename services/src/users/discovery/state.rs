//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the worker that uses it (`users::discovery`), so the services that tell it an
//! account changed (account creation, account data, expiry) need not know the worker.

use std::{
    collections::BTreeSet,
    sync::{Mutex, RwLock},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::Notify;

use crate::config::DiscoveryRoom;

/// The global account data type Tchap's clients set to hide their user from the directory
/// (`{"hide_profile": true}`).
pub const HIDE_PROFILE: &str = "im.vector.hide_profile";

pub struct Discovery {
    /// The room as configured (`directory.discovery_room`); `None`: no discovery room.
    pub(crate) configured: Option<DiscoveryRoom>,
    /// Its id once known (at once for an id, after resolution for an alias).
    pub(crate) room: RwLock<Option<OwnedRoomId>>,
    /// Accounts whose membership is to be checked (created, hidden or shown, expired, renewed).
    pub(crate) pending: Mutex<BTreeSet<OwnedUserId>>,
    pub(crate) wake: Notify,
}

impl Discovery {
    pub fn new(configured: Option<DiscoveryRoom>) -> Self {
        let room = match &configured {
            Some(DiscoveryRoom::Id(id)) => Some(id.clone()),
            _ => None,
        };
        Self { configured, room: RwLock::new(room), pending: Mutex::new(BTreeSet::new()), wake: Notify::new() }
    }

    /// Whether a discovery room is configured.
    pub fn enabled(&self) -> bool {
        self.configured.is_some()
    }

    /// Tells the worker that whether `user` belongs in the room may have changed.
    pub fn touch(&self, user: &UserId) {
        if self.enabled() {
            self.pending.lock().expect("discovery queue").insert(user.to_owned());
            self.wake.notify_one();
        }
    }

    /// The room's id, once known.
    pub fn room(&self) -> Option<OwnedRoomId> {
        self.room.read().expect("discovery room").clone()
    }

    /// Whether `room` is the discovery room, which clients are never shown (sync, room lists,
    /// notifications): it is the directory's, not the user's.
    pub fn is_room(&self, room: &RoomId) -> bool {
        self.room.read().expect("discovery room").as_deref() == Some(room)
    }
}
