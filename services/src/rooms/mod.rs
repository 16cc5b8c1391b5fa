//! Rooms and their events: the one write path every event goes through.
//!
//! `append` (and `create` for a room's first event) builds the PDU, checks it against the room
//! version's authorization rules, computes the state after it, persists it with a stream position
//! in one batch, and then notifies the stream. Sync, federation sending, appservices and push are
//! consumers of that stream; nothing else writes events.

pub mod blocking;
pub mod create;
pub mod delayed;
pub mod directory;
pub mod hierarchy;
pub mod membership;
mod network;
pub mod notices;
pub mod overlay;
pub mod pdu;
mod peers;
pub mod power;
pub mod purge;
pub mod read;
pub mod remote;
pub mod signing;
pub mod state;
pub mod tables;
#[cfg(test)]
pub(crate) mod tests;
pub mod upgrade;
pub mod visibility;
mod write;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    events::{StateEventType, TimelineEventType},
    CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId, RoomVersionId,
    UserId,
};
use tokio::sync::watch;

pub use self::tables::{
    AliasRecord, EventMeta, InviteNotice, MembershipRecord, OutlierMeta, PendingInvite, RoomRecord,
};
use self::{pdu::Pdu, state::StateStore};
use crate::{
    db::{
        codec::{prefix, Be64, Codec, Json},
        Database, Recent,
    },
    error::{Error, Result},
    server_keys::ServerKeys,
    stream::{wait_durable, Writer},
    users::profile::Profiles,
};

/// Entries of each [`Recent`] cache of the rooms before it starts over.
const RECENT_ENTRIES: usize = 100_000;

/// Parsed auth events kept in memory before the cache starts over.
const AUTH_CACHE_ENTRIES: usize = 10_000;

/// The spec's limit on a whole PDU.
pub const MAX_PDU_BYTES: usize = 65_536;

/// More than our signature adds to a PDU (`,"signatures":{server:{key id:signature}}`, a server
/// name being at most 255 bytes): an event stored unsigned within this of [`MAX_PDU_BYTES`]
/// might exceed it once signed.
const SIGNATURE_ROOM: usize = 512;

/// The spec's size limits on an event's fields (type and state key at most 255 bytes), checked
/// before anything is built: other servers refuse such a PDU, so accepting it would split the room.
fn check_size_limits(event: &NewEvent) -> Result<()> {
    let kind = event.kind.to_string();
    if kind.len() > 255 {
        return Err(Error::TooLarge("an event type is at most 255 bytes".into()));
    }
    if event.state_key.as_ref().is_some_and(|k| k.len() > 255) {
        return Err(Error::TooLarge("a state key is at most 255 bytes".into()));
    }
    Ok(())
}

/// The state an invitee or knocker is shown of a room they are not in (the spec's recommended
/// stripped state): what identifies the room and says whether it is encrypted.
pub const STRIPPED_STATE: [StateEventType; 7] = [
    StateEventType::RoomCreate,
    StateEventType::RoomJoinRules,
    StateEventType::RoomName,
    StateEventType::RoomAvatar,
    StateEventType::RoomTopic,
    StateEventType::RoomCanonicalAlias,
    StateEventType::RoomEncryption,
];

impl EventMeta {
    /// The state after the event in its DAG branch.
    pub fn dag_snapshot(&self) -> u64 {
        self.state_after.unwrap_or(self.snapshot)
    }
}

/// The room's state after an event that does not cover every forward extremity: the resolution
/// of the states at all of them.
enum Resolved {
    /// Computed for this event, by short state key (stored as a delta on the old current state).
    Map(state::StateMap),
    /// Computed before for the same states and stored: its snapshot (see
    /// [`Rooms::cached_resolution`]). No new snapshot is written.
    Snapshot(u64),
}

/// What the state-dependent auth rules read for a non-state event (a message, a reaction…): the
/// room's create event, its power levels (if any), the sender's membership event, and the
/// event's type. Events are immutable by id, so the same inputs give the same outcome (a
/// redaction of a state event, which changes its stored form, empties the set).
#[derive(PartialEq, Eq, Hash)]
struct AuthInputs {
    create: OwnedEventId,
    power_levels: Option<OwnedEventId>,
    sender_member: OwnedEventId,
    kind: TimelineEventType,
}

/// Auth outcomes kept at most; the set is emptied when full.
const AUTH_OUTCOMES: usize = 4_096;

/// What [`Rooms::persist`] writes for one event.
struct Plan {
    version: RoomVersionId,
    event_id: OwnedEventId,
    json: Vec<u8>,
    pdu: Pdu,
    /// The state snapshot before the event (`None` for a create event).
    before: Option<u64>,
    /// The room's state after this event when it is not simply "the state before plus this
    /// event": the resolved state of a fork.
    resolved: Option<Resolved>,
    /// The room's current snapshot before this event.
    old_current: Option<u64>,
    extremities: Vec<OwnedEventId>,
    depth: u64,
    txn: Option<TxnKey>,
    /// History fetched from another server, placed before our join: in the timeline, but not
    /// part of the room's current state, extremities or memberships.
    historical: bool,
    /// Visibility index entries to record at this event's position (the memberships and history
    /// visibility of a remote room as we enter it).
    extra_visibility: Vec<visibility::VisibilityChange>,
    /// Memberships to record with this event: the members of a remote room as we enter it.
    extra_members: Vec<(OwnedUserId, String, OwnedEventId)>,
    /// Built and signed here just now: it cannot have been stored as an outlier before (its id
    /// is the hash of content no other server had), so no outlier record needs deleting.
    built_here: bool,
}

impl MembershipRecord {
    /// The position the current joined period began at (for a join).
    pub fn period_start(&self) -> u64 {
        self.joined_since.unwrap_or(self.pos)
    }
}

/// An event a local user asks to send.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub content: serde_json::Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl NewEvent {
    pub fn state(kind: StateEventType, state_key: impl Into<String>, content: serde_json::Value) -> Self {
        Self { kind: kind.to_string().into(), content, state_key: Some(state_key.into()), redacts: None }
    }
    pub fn message(kind: TimelineEventType, content: serde_json::Value) -> Self {
        Self { kind, content, state_key: None, redacts: None }
    }

    /// A redaction of `target` in a room of `version`: the target goes in the content from
    /// room version 11 on, at the top level before.
    pub fn redaction(version: &RoomVersionId, target: &EventId, reason: Option<&str>) -> Self {
        let mut content = serde_json::json!({});
        if let Some(reason) = reason {
            content["reason"] = serde_json::json!(reason);
        }
        let mut event = Self::message(TimelineEventType::RoomRedaction, content);
        if version.rules().is_some_and(|r| r.redaction.content_field_redacts) {
            event.content["redacts"] = serde_json::json!(target);
        } else {
            event.redacts = Some(target.to_owned());
        }
        event
    }
}

/// Where a new event hangs in the DAG.
#[derive(Clone, Copy)]
struct Links<'a> {
    prev_events: &'a [OwnedEventId],
    auth_events: &'a [OwnedEventId],
    depth: u64,
}

/// Identifies a client transaction (`PUT /send/{type}/{txnId}`) for idempotency.
#[derive(Debug, Clone)]
pub struct TxnKey {
    pub user: OwnedUserId,
    pub device: ruma::OwnedDeviceId,
    /// What the client chose (given back as `unsigned.transaction_id`).
    pub txn_id: String,
    /// The endpoint it came with, without the id (`send/{room}/{type}`, `redact/{room}/{event}`…):
    /// the spec scopes a transaction id to the device *and* the request path, so the same id sent
    /// to another room or as another event type is another request, not a retry.
    pub scope: String,
}

impl TxnKey {
    /// The stored key: the scope length-prefixed, so that no (scope, id) pair can spell another.
    pub fn stored(&self) -> (OwnedUserId, ruma::OwnedDeviceId, String) {
        (self.user.clone(), self.device.clone(), format!("{}:{}{}", self.scope.len(), self.scope, self.txn_id))
    }
}

/// What a test runs right after an event's write is queued (see `Rooms::after_queued`).
#[cfg(test)]
pub(crate) type AfterQueued = Box<dyn Fn(&RoomId) + Send>;

pub struct Rooms {
    db: Arc<Database>,
    server_name: OwnedServerName,
    keys: Arc<ServerKeys>,
    profiles: Arc<Profiles>,
    /// Serializes alias check-and-insert, and holds the aliases a `createRoom` in progress has
    /// claimed (so two creations cannot both pass validation with one alias).
    alias_lock: Mutex<std::collections::HashSet<String>>,
    pub state: StateStore,
    /// The ministry network's settings: access rules, external servers (`network.rs`).
    network: Arc<crate::network::Network>,
    /// One lock per room: local events of a room are appended one at a time, so they never fork
    /// the DAG; different rooms proceed in parallel.
    locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    /// Room records, kept current under each room's lock (ahead of the disk while a write is
    /// queued), so the next event builds on the previous one without waiting for its fsync.
    records: Mutex<HashMap<OwnedRoomId, RoomRecord>>,
    /// Parsed auth events (see [`Rooms::auth_pdu`]).
    auth_cache: Mutex<HashMap<OwnedEventId, Arc<Pdu>>>,
    /// Membership records read, kept while no membership has been written ([`Recent`]): every
    /// send checks the sender's, and memberships change far less often than messages come.
    recent_memberships: Recent<(OwnedUserId, OwnedRoomId), Option<MembershipRecord>>,
    /// Whether a local sender's account is suspended, kept while no account has been written.
    recent_suspended: Recent<OwnedUserId, bool>,
    /// Whether each room has members of other servers joined, by the state snapshot it was
    /// read at (see [`Rooms::leaves_at_once`]).
    federated: Mutex<HashMap<OwnedRoomId, (u64, bool)>>,
    /// The signatures of our events signed on their way out (see [`Rooms::pdu_json_for_peers`]).
    signed_out: Mutex<HashMap<OwnedEventId, CanonicalJsonValue>>,
    /// Resolutions made, by the set of state snapshots resolved (see [`Rooms::cached_resolution`]).
    resolutions: Mutex<HashMap<Vec<u64>, u64>>,
    /// State-dependent auth checks passed by non-state events, by the state events they read
    /// (see [`Rooms::check_auth`]).
    auth_outcomes: Mutex<std::collections::HashSet<AuthInputs>>,
    /// Run by an event's write right after its job is queued: a test stands there for a caller
    /// the scheduler stopped, while the writer makes the event durable and wakes its readers.
    #[cfg(test)]
    pub(crate) after_queued: Mutex<Option<AfterQueued>>,
    /// The user directory's view of each room's joined members (`directory.rs`).
    directory_cache: Mutex<HashMap<OwnedRoomId, Arc<Vec<directory::DirectoryEntry>>>>,
    writer: Arc<Writer>,
    /// What the writer holds that is not durable yet (shared with it).
    pending: Arc<Mutex<overlay::Pending>>,
    /// The lowest position of backfilled history stored ([`crate::db::STREAM_BASE`] before any):
    /// it only goes down, and the search indexer follows it.
    backfilled: watch::Sender<u64>,
    /// Events appended since start-up, ours and other servers' (the metrics' counters).
    pub appended: Appended,
    /// State resolutions since start-up: run, or found in the cache.
    pub resolutions_counted: Resolutions,
}

/// Counts of appended events by origin.
#[derive(Default)]
pub struct Appended {
    pub local: std::sync::atomic::AtomicU64,
    pub remote: std::sync::atomic::AtomicU64,
}

/// Counts of state resolutions of two states or more (see [`Rooms::cached_resolution`]).
#[derive(Default)]
pub struct Resolutions {
    /// Resolutions the algorithm ran for.
    pub computed: std::sync::atomic::AtomicU64,
    /// Resolutions found in the cache.
    pub cached: std::sync::atomic::AtomicU64,
}

fn rules_of(version: &RoomVersionId) -> Result<ruma::room_version_rules::RoomVersionRules> {
    version.rules().ok_or_else(|| Error::Internal(format!("no rules known for room version {version}")))
}

fn canonical(value: serde_json::Value) -> Result<CanonicalJsonValue> {
    CanonicalJsonValue::try_from(value).map_err(|e| Error::BadJson(format!("content is not canonical JSON: {e}")))
}

impl Rooms {
    pub fn new(
        db: Arc<Database>,
        server_name: OwnedServerName,
        keys: Arc<ServerKeys>,
        profiles: Arc<Profiles>,
        writer: Arc<Writer>,
        pending: Arc<Mutex<overlay::Pending>>,
    ) -> Self {
        let lowest_backfilled = db
            .tables
            .rooms
            .backfillpos_eventid
            .iter()
            .next()
            .and_then(|entry| entry.ok())
            .map_or(crate::db::STREAM_BASE, |(pos, _)| pos.0);
        Self {
            backfilled: watch::channel(lowest_backfilled).0,
            network: Arc::new(crate::network::Network::none(&server_name)),
            state: StateStore::new(db.clone(), pending.clone()),
            records: Mutex::new(HashMap::new()),
            auth_cache: Mutex::new(HashMap::new()),
            #[cfg(test)]
            after_queued: Mutex::new(None),
            recent_memberships: Recent::new(RECENT_ENTRIES),
            recent_suspended: Recent::new(RECENT_ENTRIES),
            resolutions: Mutex::new(HashMap::new()),
            federated: Mutex::new(HashMap::new()),
            signed_out: Mutex::new(HashMap::new()),
            auth_outcomes: Mutex::new(std::collections::HashSet::new()),
            directory_cache: Mutex::new(HashMap::new()),
            writer,
            pending,
            db,
            server_name,
            keys,
            profiles,
            alias_lock: Mutex::new(Default::default()),
            locks: Mutex::new(HashMap::new()),
            appended: Appended::default(),
            resolutions_counted: Resolutions::default(),
        }
    }

    /// The per-user wake-ups of the stream.
    pub fn notifier(&self) -> &Arc<crate::stream::Notifier> {
        &self.writer.notifier
    }

    /// A receiver that changes whenever an event is persisted (value: its stream position).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.writer.subscribe()
    }

    /// A receiver that changes whenever backfilled history is stored (value: the lowest
    /// position of backfilled history, see `backfillpos_eventid`).
    pub fn subscribe_backfilled(&self) -> watch::Receiver<u64> {
        self.backfilled.subscribe()
    }

    fn lock(&self, room: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().expect("room locks").entry(room.to_owned()).or_default().clone()
    }

    /// The latest stream position that wrote to the room (an event or a receipt): from memory,
    /// or read once from the store after a restart.
    pub fn last_activity(&self, room: &RoomId) -> Result<u64> {
        if let Some(pos) = self.writer.room_activity(room) {
            return Ok(pos);
        }
        let tables = &self.db.tables;
        let end = (room.to_owned(), Be64(u64::MAX)).encode();
        let last_event =
            match tables.rooms.roomidpos_eventid.scan_from(prefix(&room.to_owned()), end.clone(), false).next() {
                Some(entry) => (entry?.0).1 .0,
                None => 0,
            };
        let last_receipt =
            match tables.ephemeral.roomidpos_receipt.scan_from(prefix(&room.to_owned()), end, false).next() {
                Some(entry) => (entry?.0).1 .0,
                None => 0,
            };
        let last = last_event.max(last_receipt);
        self.writer.touch_room(room, last);
        Ok(last)
    }

    /// A position at or after the room's latest membership change: exact for changes since
    /// start-up, else the room's state snapshot id (allocated after the change's position).
    pub fn last_member_change(&self, room: &RoomId) -> Result<u64> {
        if let Some(pos) = self.writer.room_member_activity(room) {
            return Ok(pos);
        }
        let bound = self.room(room)?.map_or(0, |r| r.snapshot);
        self.writer.touch_members(room, bound);
        Ok(bound)
    }

    pub fn room(&self, room: &RoomId) -> Result<Option<RoomRecord>> {
        if let Some(record) = self.records.lock().expect("room records").get(room) {
            return Ok(Some(record.clone()));
        }
        let record = self.db.tables.rooms.roomid_room.get(&room.to_owned())?.map(|Json(r)| r);
        if let Some(r) = &record {
            self.records.lock().expect("room records").entry(room.to_owned()).or_insert_with(|| r.clone());
        }
        Ok(record)
    }

    /// Drops every forward extremity but the deepest (the admin API's `DELETE
    /// …/forward_extremities`, for a room whose many extremities make each new event slow to
    /// build). The next local event then has one prev event. Answers how many were dropped.
    pub async fn prune_extremities(&self, room: &RoomId) -> Result<usize> {
        let lock = self.lock(room);
        let _guard = lock.lock().await;
        let mut record = self.room(room)?.ok_or_else(|| Error::not_found("Room not found"))?;
        if record.extremities.len() < 2 {
            return Ok(0);
        }
        let depth = |id: &OwnedEventId| self.pdu(id).ok().flatten().map_or(0, |p| u64::from(p.depth));
        let keep = record.extremities.iter().max_by_key(|id| depth(id)).cloned().expect("two extremities or more");
        let dropped = record.extremities.len() - 1;
        record.extremities = vec![keep];
        // Through the writer, after any write of this room still queued, so none overwrites it.
        let durable = self.writer.submit(&self.db, |batch, _| {
            self.db.tables.rooms.roomid_room.insert(batch, &room.to_owned(), &Json(record.clone()));
            // Before the job is queued, as an event's write does (`Rooms::persist`).
            self.records.lock().expect("room records").insert(room.to_owned(), record);
            Ok(crate::stream::Cleanup::default())
        })?;
        wait_durable(durable).await?;
        Ok(dropped)
    }

    pub fn exists(&self, room: &RoomId) -> Result<bool> {
        Ok(self.room(room)?.is_some())
    }

    pub fn pdu_json(&self, event: &EventId) -> Result<Option<Vec<u8>>> {
        if let Some((json, _)) = self.pending.lock().expect("pending overlay").event(event) {
            return Ok(Some(json.clone()));
        }
        Ok(self.db.tables.rooms.eventid_pdu.get(&event.to_owned())?)
    }

    /// Drops the copies the stream keeps of recently written events (`Pending::forget`): for a
    /// write of a stored event's form outside the stream writer's overlay.
    fn forget_recent<'a>(&self, ids: impl IntoIterator<Item = &'a OwnedEventId>) {
        self.pending.lock().expect("pending overlay").forget(ids);
    }

    pub fn pdu(&self, event: &EventId) -> Result<Option<Pdu>> {
        match self.pdu_json(event)? {
            Some(json) => Pdu::from_json(event.to_owned(), &json)
                .map(Some)
                .map_err(|e| Error::Internal(format!("stored event {event} unreadable: {e}"))),
            None => Ok(None),
        }
    }

    /// A parsed event for the auth checks. Auth events are read for every new event of a room,
    /// so parsed copies are cached, and shared rather than copied (a copy of an event is a dozen
    /// allocations, and every message reads three to six of them); a redaction evicts its
    /// target (its stored form changes).
    fn auth_pdu(&self, event: &EventId) -> Option<Arc<Pdu>> {
        if let Some(pdu) = self.auth_cache.lock().expect("auth cache").get(event) {
            return Some(pdu.clone());
        }
        let pdu = Arc::new(self.pdu(event).ok().flatten()?);
        let mut cache = self.auth_cache.lock().expect("auth cache");
        if cache.len() >= AUTH_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(event.to_owned(), pdu.clone());
        Some(pdu)
    }

    /// The auth events of an event, from the parsed copies of [`Self::auth_pdu`] without
    /// copying the rest of it: auth chains walk thousands of events.
    fn auth_events_of(&self, event: &EventId) -> Option<Vec<OwnedEventId>> {
        if let Some(pdu) = self.auth_cache.lock().expect("auth cache").get(event) {
            return Some(pdu.auth_events.clone());
        }
        self.auth_pdu(event).map(|p| p.auth_events.clone())
    }

    pub fn meta(&self, event: &EventId) -> Result<Option<EventMeta>> {
        if let Some((_, meta)) = self.pending.lock().expect("pending overlay").event(event) {
            return Ok(Some(meta.clone()));
        }
        Ok(self.db.tables.rooms.eventid_meta.get(&event.to_owned())?.map(|Json(m)| m))
    }

    /// The event id of a state entry in a snapshot.
    pub fn state_event_id_in(
        &self,
        snapshot: u64,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Option<OwnedEventId>> {
        let Some(short) = self.state.short_key(kind, state_key)? else { return Ok(None) };
        Ok(self.state.load(snapshot)?.get(&short).cloned())
    }

    /// A current state event of a room.
    pub fn state_event(&self, room: &RoomId, kind: &StateEventType, state_key: &str) -> Result<Option<Pdu>> {
        let Some(record) = self.room(room)? else { return Ok(None) };
        match self.state_event_id_in(record.snapshot, kind, state_key)? {
            Some(id) => self.pdu(&id),
            None => Ok(None),
        }
    }

    /// The whole state of a snapshot as `(type, state_key) → event id`.
    pub fn full_state(&self, snapshot: u64) -> Result<Vec<((StateEventType, String), OwnedEventId)>> {
        self.state
            .load(snapshot)?
            .iter()
            .map(|(short, id)| Ok((self.state.state_key_of(*short)?, id.clone())))
            .collect()
    }

    pub fn membership(&self, user: &UserId, room: &RoomId) -> Result<Option<MembershipRecord>> {
        let table = &self.db.tables.rooms.useridroomid_membership;
        let key = (user.to_owned(), room.to_owned());
        self.recent_memberships.get_or_read(&key, table.generation(), || Ok(table.get(&key)?.map(|Json(m)| m)))
    }

    pub fn is_joined(&self, user: &UserId, room: &RoomId) -> Result<bool> {
        Ok(self.membership(user, room)?.is_some_and(|m| m.membership == "join"))
    }

    /// Every membership record of the user (rooms they joined, were invited to, left…; forgotten
    /// rooms excluded).
    pub fn memberships_of(&self, user: &UserId) -> Result<Vec<(OwnedRoomId, MembershipRecord)>> {
        self.db
            .tables
            .rooms
            .useridroomid_membership
            .scan_prefix(prefix(&user.to_owned()))
            .map(|r| r.map(|((_, room), Json(m))| (room, m)).map_err(Error::from))
            .collect()
    }

    /// Rooms where the user has the given membership.
    pub fn rooms_of(&self, user: &UserId, membership: &str) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for entry in self.db.tables.rooms.useridroomid_membership.scan_prefix(prefix(&user.to_owned())) {
            let ((_, room), Json(m)) = entry?;
            if m.membership == membership {
                out.push(room);
            }
        }
        Ok(out)
    }

    /// Members of a room with their membership.
    pub fn members(&self, room: &RoomId) -> Result<Vec<(OwnedUserId, MembershipRecord)>> {
        self.db
            .tables
            .rooms
            .roomiduserid_membership
            .scan_prefix(prefix(&room.to_owned()))
            .map(|r| r.map(|((_, user), Json(m))| (user, m)).map_err(Error::from))
            .collect()
    }

    /// The event a client transaction produced, if it was already sent.
    pub fn txn_event(&self, txn: &TxnKey) -> Result<Option<OwnedEventId>> {
        let key = txn.stored();
        if let Some(id) = self.pending.lock().expect("pending overlay").txns.get(&key) {
            return Ok(Some(id.clone()));
        }
        Ok(self.db.tables.rooms.useriddevicetxn_eventid.get(&key)?)
    }
}

/// The event an event relates to (`m.relates_to.event_id`, or the reply target).
fn rel_type(pdu: &Pdu) -> Option<String> {
    let content: serde_json::Value = serde_json::from_str(pdu.content.get()).ok()?;
    content["m.relates_to"]["rel_type"].as_str().map(str::to_owned)
}

fn relates_to(pdu: &Pdu) -> Option<OwnedEventId> {
    let content: serde_json::Value = serde_json::from_str(pdu.content.get()).ok()?;
    let relates = content.get("m.relates_to")?;
    let id = relates.get("event_id").or_else(|| relates.get("m.in_reply_to").and_then(|r| r.get("event_id")))?;
    OwnedEventId::try_from(id.as_str()?).ok()
}
