//! The rooms tables and the records they keep. Events, the room timelines and stream, state snapshots, memberships, aliases, relations, held-back events and delayed events.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What we keep about a room besides its events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomRecord {
    pub version: RoomVersionId,
    /// Snapshot id of the current state.
    pub snapshot: u64,
    /// Forward extremities: the events new local events point back to.
    pub extremities: Vec<OwnedEventId>,
    /// Depth of the newest event.
    pub depth: u64,
}

/// Where an event sits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventMeta {
    pub room_id: OwnedRoomId,
    /// Position in the global stream (also the order in the room's timeline).
    pub pos: u64,
    /// Snapshot of the room state after this event.
    pub snapshot: u64,
    #[serde(default)]
    pub redacted_because: Option<OwnedEventId>,
    /// The state after this event in its own branch of the room's DAG, when it differs from
    /// `snapshot` (the room's state at this stream position, after resolving forks). The state
    /// remote servers ask for at an event is this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_after: Option<u64>,
    /// The state event this state event replaced in its DAG branch (`unsigned.replaces_state`,
    /// and where `prev_content` comes from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<OwnedEventId>,
}

/// An event held outside any timeline (see `eventid_outlier`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutlierMeta {
    pub room_id: OwnedRoomId,
    /// Failed the authorization rules: never used as an auth or state event.
    #[serde(default)]
    pub rejected: bool,
    /// Passed the rules against its own state but not the room's current state: kept, not shown.
    #[serde(default)]
    pub soft_failed: bool,
    /// For a soft-failed event, the snapshot of the state after it in its DAG branch. The spec
    /// has soft-failed events take part in state resolution as usual once later events name
    /// them as prev events: those events take their state before from here, as from any other
    /// event, instead of asking the sending server for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_after: Option<u64>,
}

/// A user's membership in a room, indexed both ways.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembershipRecord {
    pub membership: String,
    pub event_id: OwnedEventId,
    pub pos: u64,
    /// For a join: where the current joined period began (a profile change is a new join event
    /// but not a new period). Records written before this field read as starting at `pos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joined_since: Option<u64>,
}

/// A room alias and who made it (the creator may delete it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub parent: Option<u64>,
    /// Number of deltas from here to the nearest full snapshot (0 = this one is full).
    pub chain: u32,
    pub added: Vec<(u64, OwnedEventId)>,
    pub removed: Vec<u64>,
}

/// A scheduled delayed event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delayed {
    pub owner: OwnedUserId,
    pub room_id: OwnedRoomId,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_key: Option<String>,
    pub content: Value,
    pub delay_ms: u64,
    /// When it is sent unless restarted or cancelled.
    pub send_ts: u64,
    /// The stream position when it was scheduled: only state events after it cancel it.
    pub scheduled_pos: u64,
}

/// A third-party (email) invite this node sent and keeps until the address is bound to an
/// account here (`addresstoken_threepidinvite`): the room, who invited, and the key that signs
/// the exchange. Each invite has a key of its own (as an identity service's ephemeral keys), so
/// the exchange does not depend on the server key, which rotates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingInvite {
    pub room: OwnedRoomId,
    pub sender: OwnedUserId,
    pub display_name: String,
    /// PKCS#8 document of the invite's ed25519 key.
    pub(crate) key: Vec<u8>,
    /// Its public key (unpadded base64), as the room's `m.room.third_party_invite` shows it.
    #[serde(default)]
    pub public_key: String,
    pub created_ts: u64,
}

/// A third-party invite another node of the network sent to an address this node is the home
/// of (`addresstoken_invitenotice`): what makes the address `invited` here, and whom to tell
/// once it is bound to an account here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteNotice {
    pub room: OwnedRoomId,
    pub sender: OwnedUserId,
    /// Past this time (ms) the invite no longer counts.
    pub expires_ts: u64,
}

hemicycle_core::tables! {
    /// The rooms column families.
    pub struct Tables {
        /// Event id → the PDU's JSON as signed (redacted in place when a redaction applies).
        pub eventid_pdu: Table<OwnedEventId, Vec<u8>>,
        /// Event id → room, stream position, state snapshot after it.
        pub eventid_meta: Table<OwnedEventId, Json<EventMeta>>,
        /// The global event stream: position → event id (sync and senders tail this).
        pub pos_eventid: Table<Be64, OwnedEventId>,
        /// A room's timeline in order: (room, position) → event id.
        pub roomidpos_eventid: Table<(OwnedRoomId, Be64), OwnedEventId>,
        /// History fetched later (backfill), off the stream: position (below every stream
        /// position, handed out downwards) → event id, so the search index finds what was taken
        /// in since it last looked by reading downwards from there.
        pub backfillpos_eventid: Table<Be64, OwnedEventId>,
        /// Room → version, current state snapshot, forward extremities, depth.
        pub roomid_room: Table<OwnedRoomId, Json<RoomRecord>>,
        /// (event type, state key) → short number, and back.
        pub statekey_short: Table<(String, String), Be64>,
        pub short_statekey: Table<Be64, Json<(String, String)>>,
        /// State snapshots as deltas.
        pub snapshotid_snapshot: Table<Be64, Json<Snapshot>>,
        /// Memberships, by user and by room.
        pub useridroomid_membership: Table<(OwnedUserId, OwnedRoomId), Json<MembershipRecord>>,
        pub roomiduserid_membership: Table<(OwnedRoomId, OwnedUserId), Json<MembershipRecord>>,
        /// Every membership change: (room, user, position) → membership. What a user may read of a
        /// room's history follows these periods (`rooms::visibility`).
        pub roomiduserpos_membership: Table<(OwnedRoomId, OwnedUserId, Be64), String>,
        /// Every change of a room's history visibility: (room, position) → the new setting.
        pub roomidpos_visibility: Table<(OwnedRoomId, Be64), String>,
        /// (user, device, transaction id) → the event it produced, for idempotent sends.
        pub useriddevicetxn_eventid: Table<(OwnedUserId, OwnedDeviceId, String), OwnedEventId>,
        /// The other way: a local event → the device that sent it and the client's transaction id,
        /// for `unsigned.transaction_id` on that device's copy.
        pub eventid_devicetxn: Table<OwnedEventId, Json<(OwnedDeviceId, String)>>,
        /// Room alias → room and who created the alias.
        pub alias_roomid: Table<String, Json<AliasRecord>>,
        /// Rooms published in the public directory.
        pub roomid_published: Table<OwnedRoomId, Vec<u8>>,
        /// (related-to event id, position) → the relating event (edits, reactions, threads, replies).
        pub parentpos_childeventid: Table<(OwnedEventId, Be64), OwnedEventId>,
        /// Rooms an admin blocked: nobody of this server may join or be invited (→ the admin).
        pub roomid_blocked: Table<OwnedRoomId, String>,
        /// Each user's server notices room.
        pub userid_noticeroom: Table<OwnedUserId, OwnedRoomId>,
        /// Events we hold but that are not in a timeline: state and auth events of remote rooms,
        /// rejected and soft-failed events. Event id → room and why.
        pub eventid_outlier: Table<OwnedEventId, Json<OutlierMeta>>,
        /// (room, position of a thread reply) → its thread root, for `/threads` by latest activity.
        pub roomidpos_threadroot: Table<(OwnedRoomId, Be64), OwnedEventId>,
        /// Delay id → a scheduled delayed event (MSC4140), until it is sent or cancelled.
        pub delayid_delayed: Table<String, Json<Delayed>>,
        /// (owner, delay id) → delay id: a user's scheduled events, listed and counted for the limit.
        pub useriddelayid_delayid: Table<(OwnedUserId, String), String>,
        /// (send time as big-endian u64, delay id) → delay id: read in time order by the one timer task.
        pub duedelayid_delayid: Table<Vec<u8>, String>,
        /// (room, type, state key, delay id) → delay id: the delayed state events another user's state
        /// event of the same key cancels.
        pub roomidtypestatekeydelayid_delayid: Table<(OwnedRoomId, String, String, String), String>,
        /// (email address, token) → a third-party invite this node sent, until the address is bound
        /// here (ministry network, docs/network.md).
        pub addresstoken_threepidinvite: Table<(String, String), Json<PendingInvite>>,
        /// Token of a kept third-party invite → its address (revocations name the token only).
        pub token_threepidinvite: Table<String, String>,
        /// Public key of a kept third-party invite → its token (`…/pubkey/ephemeral/isvalid`).
        pub publickey_threepidinvite: Table<String, String>,
        /// (email address, token) → a third-party invite another node of the network sent to an
        /// address whose home is this node, until taken up, revoked or expired.
        pub addresstoken_invitenotice: Table<(String, String), Json<InviteNotice>>,
    }
}
