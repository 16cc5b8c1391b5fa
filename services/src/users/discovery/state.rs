//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the worker that uses it (`users::discovery`), so the services that tell it an
//! account changed (account creation, account data, expiry) need not know the worker.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, RwLock},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::Notify;

use crate::{
    config::DiscoveryRoom,
    db::{Batch, Database},
    error::Result,
    stream::Notifier,
};

/// The global account data type Tchap's clients set to hide their user from the directory
/// (`{"hide_profile": true}`).
pub const HIDE_PROFILE: &str = "im.vector.hide_profile";

pub struct Discovery {
    /// The room as configured (`directory.discovery_room`); `None`: no discovery room.
    pub(crate) configured: Option<DiscoveryRoom>,
    /// Its id once known (at once for an id, after resolution for an alias).
    pub(crate) room: RwLock<Option<OwnedRoomId>>,
    /// The rooms that filled up (`directory.discovery_passive_rooms`): only left, never joined.
    pub(crate) passives: Vec<OwnedRoomId>,
    /// Accounts whose membership is to be checked (created, hidden or shown, expired, renewed).
    pub(crate) pending: Mutex<BTreeSet<OwnedUserId>>,
    pub(crate) wake: Notify,
    /// The syncs' wake-ups, told which room is the discovery room so that its joins and leaves
    /// wake no one.
    notifier: Arc<Notifier>,
    db: Arc<Database>,
}

impl Discovery {
    /// The room as configured; an alias resolved before (its id kept in `discoveryalias_roomid`)
    /// is known at once, so that after a restart clients are not shown the room while the alias
    /// is resolved again.
    pub fn new(
        configured: Option<DiscoveryRoom>,
        passives: Vec<OwnedRoomId>,
        db: Arc<Database>,
        notifier: Arc<Notifier>,
    ) -> Result<Self> {
        let room = match &configured {
            Some(DiscoveryRoom::Id(id)) => Some(id.clone()),
            Some(DiscoveryRoom::Alias(alias)) => db.tables.users.discoveryalias_roomid.get(&alias.to_string())?,
            None => None,
        };
        for room in room.iter().chain(&passives) {
            notifier.set_quiet_room(room, None);
        }
        Ok(Self {
            configured,
            room: RwLock::new(room),
            passives,
            pending: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
            notifier,
            db,
        })
    }

    /// The room's id as the configured alias resolves now: kept (durably, for the next start)
    /// and made the room clients are not shown and whose changes wake no sync.
    pub(crate) fn set_room(&self, room: &RoomId) -> Result<()> {
        let mut current = self.room.write().expect("discovery room");
        if current.as_deref() == Some(room) {
            return Ok(());
        }
        if let Some(DiscoveryRoom::Alias(alias)) = &self.configured {
            let mut batch = Batch::new();
            self.db.tables.users.discoveryalias_roomid.insert(&mut batch, &alias.to_string(), &room.to_owned());
            self.db.commit(batch)?;
        }
        self.notifier.set_quiet_room(room, current.as_deref());
        *current = Some(room.to_owned());
        Ok(())
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

    /// The discovery room (once known) and the passive ones: every searcher of this node finds
    /// their members, as Synapse's directory searching all users does for Tchap — an agent in a
    /// passive room shares no room with those who joined later, and one who hides still finds
    /// the others.
    pub fn rooms(&self) -> Vec<OwnedRoomId> {
        self.room().into_iter().chain(self.passives.iter().cloned()).collect()
    }

    /// Whether `room` is the discovery room or a passive one, which clients are never shown (sync, room lists,
    /// notifications): it is the directory's, not the user's.
    pub fn is_room(&self, room: &RoomId) -> bool {
        self.room.read().expect("discovery room").as_deref() == Some(room) || self.passives.iter().any(|p| p == room)
    }
}
