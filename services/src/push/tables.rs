//! The push tables and the records they keep. Pushers, the pushes waiting for a gateway, and every notification with its running totals.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::push::Action;
use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What one event did for one user: its actions, and the user's totals in the room counting it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub actions: Vec<Action>,
    pub notify: u64,
    pub highlight: u64,
    /// The thread root when the event is a thread reply (`None`: the main timeline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The main timeline's running totals counting this event. Absent when they are the room's
    /// totals (no thread reply has notified the user in the room), as in records written before
    /// threads were counted apart, when every notification counted as the main timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main: Option<(u64, u64)>,
}

/// A thread's running totals for a user, and the position of its latest notification (a thread
/// whose latest notification is before the user's receipt costs no further read).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ThreadTotal {
    pub notify: u64,
    pub highlight: u64,
    pub last_pos: u64,
}

/// What the pruning of old notification records (`retention.notifications`) leaves of the totals
/// before them, for one timeline of a user in a room (the main timeline, or a thread).
///
/// Records before `upto` may be gone (`upto` is the position of a record that stays). The
/// receipt the user had when they went, `read`, subtracts the totals it had then, `at_read`, so
/// the unread counts of a user who never reads a room stay exact however old their
/// notifications grow. A later receipt still before `upto` subtracts the totals at `upto`: the
/// notifications between it and `upto`, older than the retention, are no longer counted, as
/// Synapse no longer counts its push actions once deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyFold {
    pub read: u64,
    pub at_read: (u64, u64),
    pub upto: u64,
}

/// Where the totals a receipt subtracts are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalsAt {
    /// The newest record at or before this position (none: zero).
    Record(u64),
    /// These totals, kept by the fold.
    Kept((u64, u64)),
}

impl NotifyFold {
    /// Where the totals at receipt `read` are found, with this fold (or none) in place.
    pub fn totals_at(fold: Option<&NotifyFold>, read: u64) -> TotalsAt {
        match fold {
            Some(fold) if read < fold.upto => {
                if read <= fold.read {
                    TotalsAt::Kept(fold.at_read)
                } else {
                    TotalsAt::Record(fold.upto)
                }
            }
            _ => TotalsAt::Record(read),
        }
    }
}

/// A stored pusher: the pusher as the client set it, and the device that set it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PusherRecord {
    pub pusher: Value,
    pub device_id: OwnedDeviceId,
    pub created_ms: u64,
}

/// (user, room, thread root, position): a key per thread reply and notified member.
pub type UserRoomThreadPos = (OwnedUserId, OwnedRoomId, String, Be64);

hemicycle_core::tables! {
    /// The push column families.
    pub struct Tables {
        /// (user, app id, pushkey) → a pusher and the device that set it.
        pub useridpushkey_pusher: Table<(OwnedUserId, String, String), Json<PusherRecord>>,
        /// (app id, pushkey, user): who registered a pushkey, so a pushkey moving to another user
        /// leaves the previous one (`append: false`).
        pub appidpushkey_userid: Table<(String, String, OwnedUserId), Vec<u8>>,
        /// (user, app id, pushkey, position) → room: notifications waiting for a push gateway.
        pub pusherpos_pending: Table<(OwnedUserId, String, String, Be64), OwnedRoomId>,
        /// (user, room, position) → the actions an event's push rules gave for the user, with the
        /// user's running notification and highlight totals in the room including it.
        pub useridroomidpos_notification: Table<(OwnedUserId, OwnedRoomId, Be64), Json<NotificationRecord>>,
        /// (user, position) → room of each notification. No longer written (`/notifications`
        /// merges the rooms' records instead); declared so that a database of an earlier
        /// release, which has the column family, opens; the pruning task empties it.
        pub useridpos_notification: Table<(OwnedUserId, Be64), OwnedRoomId>,
        /// (user, room) → the running (notification, highlight) totals.
        pub useridroomid_notifytotal: Table<(OwnedUserId, OwnedRoomId), Json<(u64, u64)>>,
        /// (user, room) → the running totals of the main timeline alone (events in no thread),
        /// once they differ from the room's (absent: the same).
        pub useridroomid_mainnotifytotal: Table<(OwnedUserId, OwnedRoomId), Json<(u64, u64)>>,
        /// (user, room, thread root) → the running totals of that thread, and its latest position.
        pub useridroomidthread_notifytotal: Table<(OwnedUserId, OwnedRoomId, String), Json<ThreadTotal>>,
        /// (user, room, thread root, position) → the thread's running totals including that event,
        /// so a threaded receipt finds the totals at its position with one seek.
        pub useridroomidthreadpos_notifytotal: Table<UserRoomThreadPos, Json<(u64, u64)>>,
        /// (user, room, thread root, or `""` for the main timeline) → what the pruning of old
        /// records left of the totals before them (written only by `crate::retention`).
        pub useridroomidthread_notifyfold: Table<(OwnedUserId, OwnedRoomId, String), Json<NotifyFold>>,
    }
}
