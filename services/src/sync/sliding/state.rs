//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use ruma::{OwnedRoomId, OwnedUserId};
use std::collections::{BTreeMap, BTreeSet};

/// Rooms already sent on each sliding sync connection (user, device, `conn_id`), so a room that
/// enters a list's range is sent whole the first time. Kept in memory: after a restart every
/// room is simply sent again. Bounded, since `conn_id` is the client's choice: per device at most
/// [`MAX_CONNECTIONS_PER_DEVICE`], and none unused for [`CONNECTION_TTL`].
#[derive(Default)]
pub struct Connections {
    pub(crate) map: std::sync::Mutex<BTreeMap<ConnectionKey, Connection>>,
    /// When expired connections were last dropped (a sweep once a minute, not per request).
    pub(crate) pruned: std::sync::Mutex<Option<std::time::Instant>>,
}
pub struct Connection {
    pub(crate) sent: BTreeSet<OwnedRoomId>,
    pub(crate) last_used: std::time::Instant,
}
pub type ConnectionKey = (OwnedUserId, ruma::OwnedDeviceId, String);
