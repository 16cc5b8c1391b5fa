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
pub use network::PendingInvite;
pub mod notices;
pub mod pdu;
pub mod power;
pub mod purge;
pub mod read;
pub mod remote;
pub mod state;
#[cfg(test)]
mod tests;
pub mod upgrade;
pub mod visibility;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    canonical_json::{redact, RedactedBecause},
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion},
    signatures::{hash_and_sign_event, reference_hash},
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId,
    RoomVersionId, UserId,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use self::{pdu::Pdu, state::StateStore};
use crate::{
    db::{
        codec::{prefix, Be64, Codec, Json},
        Database,
    },
    error::{Error, Result},
    server_keys::ServerKeys,
    stream::{wait_durable, Audience, Cleanup, Writer},
    time::now_ms,
    users::profile::Profiles,
};

/// Parsed auth events kept in memory before the cache starts over.
const AUTH_CACHE_ENTRIES: usize = 10_000;

/// The spec's limit on a whole PDU.
pub const MAX_PDU_BYTES: usize = 65_536;

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

impl EventMeta {
    /// The state after the event in its DAG branch.
    pub fn dag_snapshot(&self) -> u64 {
        self.state_after.unwrap_or(self.snapshot)
    }
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

/// The room's state after an event that does not cover every forward extremity: the resolution
/// of the states at all of them.
enum Resolved {
    /// Computed for this event, by short state key (stored as a delta on the old current state).
    Map(state::StateMap),
    /// Computed before for the same states and stored: its snapshot (see
    /// [`Rooms::cached_resolution`]). No new snapshot is written.
    Snapshot(u64),
}

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

impl MembershipRecord {
    /// The position the current joined period began at (for a join).
    pub fn period_start(&self) -> u64 {
        self.joined_since.unwrap_or(self.pos)
    }
}

/// A room alias and who made it (the creator may delete it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AliasRecord {
    pub room_id: OwnedRoomId,
    pub creator: OwnedUserId,
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
    pub txn_id: String,
}

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
    auth_cache: Mutex<HashMap<OwnedEventId, Pdu>>,
    /// Resolutions made, by the set of state snapshots resolved (see [`Rooms::cached_resolution`]).
    resolutions: Mutex<HashMap<Vec<u64>, u64>>,
    /// The user directory's view of each room's joined members (`directory.rs`).
    directory_cache: Mutex<HashMap<OwnedRoomId, Arc<Vec<directory::DirectoryEntry>>>>,
    writer: Arc<Writer>,
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
    ) -> Self {
        Self {
            network: Arc::new(crate::network::Network::none(&server_name)),
            state: StateStore::new(db.clone(), writer.pending.clone()),
            records: Mutex::new(HashMap::new()),
            auth_cache: Mutex::new(HashMap::new()),
            resolutions: Mutex::new(HashMap::new()),
            directory_cache: Mutex::new(HashMap::new()),
            writer,
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
        let last_event = match tables.roomidpos_eventid.scan_from(prefix(&room.to_owned()), end.clone(), false).next() {
            Some(entry) => (entry?.0).1 .0,
            None => 0,
        };
        let last_receipt = match tables.roomidpos_receipt.scan_from(prefix(&room.to_owned()), end, false).next() {
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
        let record = self.db.tables.roomid_room.get(&room.to_owned())?.map(|Json(r)| r);
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
            self.db.tables.roomid_room.insert(batch, &room.to_owned(), &Json(record.clone()));
            Ok(crate::stream::Cleanup::default())
        })?;
        self.records.lock().expect("room records").insert(room.to_owned(), record);
        wait_durable(durable).await?;
        Ok(dropped)
    }

    pub fn exists(&self, room: &RoomId) -> Result<bool> {
        Ok(self.room(room)?.is_some())
    }

    pub fn pdu_json(&self, event: &EventId) -> Result<Option<Vec<u8>>> {
        if let Some((json, _)) = self.writer.pending.lock().expect("pending overlay").pdus.get(event) {
            return Ok(Some(json.clone()));
        }
        Ok(self.db.tables.eventid_pdu.get(&event.to_owned())?)
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
    /// so parsed copies are cached; a redaction evicts its target (its stored form changes).
    fn auth_pdu(&self, event: &EventId) -> Option<Pdu> {
        if let Some(pdu) = self.auth_cache.lock().expect("auth cache").get(event) {
            return Some(pdu.clone());
        }
        let pdu = self.pdu(event).ok().flatten()?;
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
        self.auth_pdu(event).map(|p| p.auth_events)
    }

    pub fn meta(&self, event: &EventId) -> Result<Option<EventMeta>> {
        if let Some((_, meta)) = self.writer.pending.lock().expect("pending overlay").pdus.get(event) {
            return Ok(Some(meta.clone()));
        }
        Ok(self.db.tables.eventid_meta.get(&event.to_owned())?.map(|Json(m)| m))
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
        Ok(self.db.tables.useridroomid_membership.get(&(user.to_owned(), room.to_owned()))?.map(|Json(m)| m))
    }

    pub fn is_joined(&self, user: &UserId, room: &RoomId) -> Result<bool> {
        Ok(self.membership(user, room)?.is_some_and(|m| m.membership == "join"))
    }

    /// Every membership record of the user (rooms they joined, were invited to, left…; forgotten
    /// rooms excluded).
    pub fn memberships_of(&self, user: &UserId) -> Result<Vec<(OwnedRoomId, MembershipRecord)>> {
        self.db
            .tables
            .useridroomid_membership
            .scan_prefix(prefix(&user.to_owned()))
            .map(|r| r.map(|((_, room), Json(m))| (room, m)).map_err(Error::from))
            .collect()
    }

    /// Rooms where the user has the given membership.
    pub fn rooms_of(&self, user: &UserId, membership: &str) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for entry in self.db.tables.useridroomid_membership.scan_prefix(prefix(&user.to_owned())) {
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
            .roomiduserid_membership
            .scan_prefix(prefix(&room.to_owned()))
            .map(|r| r.map(|((_, user), Json(m))| (user, m)).map_err(Error::from))
            .collect()
    }

    /// The event a client transaction produced, if it was already sent.
    pub fn txn_event(&self, txn: &TxnKey) -> Result<Option<OwnedEventId>> {
        let key = (txn.user.clone(), txn.device.clone(), txn.txn_id.clone());
        if let Some(id) = self.writer.pending.lock().expect("pending overlay").txns.get(&key) {
            return Ok(Some(id.clone()));
        }
        Ok(self.db.tables.useriddevicetxn_eventid.get(&(txn.user.clone(), txn.device.clone(), txn.txn_id.clone()))?)
    }

    /// A suspended local account may leave rooms and redact, nothing else (`None`: creating a room).
    fn check_not_suspended(&self, sender: &UserId, event: Option<&NewEvent>) -> Result<()> {
        if !self.is_local(sender) {
            return Ok(());
        }
        let suspended = self.db.tables.userid_account.get(&sender.to_owned())?.is_some_and(|Json(a)| a.suspended);
        if !suspended {
            return Ok(());
        }
        let allowed = event.is_some_and(|e| {
            e.kind == TimelineEventType::RoomRedaction
                || (e.kind == TimelineEventType::RoomMember
                    && e.state_key.as_deref() == Some(sender.as_str())
                    && e.content["membership"] == "leave")
        });
        if allowed {
            Ok(())
        } else {
            Err(Error::UserSuspended)
        }
    }

    /// Creates a room with its `m.room.create` event and returns its id.
    pub async fn create(
        &self,
        sender: &UserId,
        version: RoomVersionId,
        mut content: serde_json::Map<String, serde_json::Value>,
    ) -> Result<OwnedRoomId> {
        let rules = rules_of(&version)?;
        self.check_not_suspended(sender, None)?;
        content.insert("room_version".into(), version.as_str().into());
        if !rules.authorization.use_room_create_sender {
            content.insert("creator".into(), sender.as_str().into());
        }
        let event = NewEvent::state(StateEventType::RoomCreate, "", serde_json::Value::Object(content));
        // Room version 12 derives the room id from the create event: two identical create
        // events from one user in one millisecond would name one room. A collision waits for the
        // clock to move (a new `origin_server_ts`, so a new id) and tries again.
        for _ in 0..100 {
            let room_id: Option<OwnedRoomId> = if rules.authorization.room_create_event_id_as_room_id {
                None
            } else {
                let local = crate::users::random_password();
                Some(
                    OwnedRoomId::try_from(format!("!{local}:{}", self.server_name))
                        .map_err(|e| Error::Internal(e.to_string()))?,
                )
            };
            let (event_id, object) = self.build(
                &rules,
                room_id.as_deref(),
                sender,
                &event,
                Links { prev_events: &[], auth_events: &[], depth: 1 },
            )?;
            let room_id = match room_id {
                Some(id) => id,
                None => OwnedRoomId::try_from(format!("!{}", &event_id.as_str()[1..]))
                    .map_err(|e| Error::Internal(e.to_string()))?,
            };
            let lock = self.lock(&room_id);
            let guard = lock.lock().await;
            if self.exists(&room_id)? {
                drop(guard);
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
            let durable = self.check_and_persist(&room_id, None, version, event_id, object, None)?;
            drop(guard);
            wait_durable(durable).await?;
            return Ok(room_id);
        }
        Err(Error::Internal("no free room id after 100 tries".into()))
    }

    /// Appends a local event to a room: the single write path.
    #[tracing::instrument(name = "rooms.append", skip_all, fields(room = %room, kind = %event.kind))]
    pub async fn append(
        &self,
        room: &RoomId,
        sender: &UserId,
        mut event: NewEvent,
        txn: Option<TxnKey>,
    ) -> Result<OwnedEventId> {
        let lock = self.lock(room);
        let guard = lock.lock().await;
        if let Some(txn) = &txn {
            if let Some(existing) = self.txn_event(txn)? {
                return Ok(existing);
            }
        }
        if event.kind == TimelineEventType::RoomPowerLevels && event.state_key.as_deref() == Some("") {
            self.keep_an_admin_on_demotion(room, sender, &mut event.content);
        }
        let record = self.room(room)?.ok_or_else(|| Error::not_found("unknown room"))?;
        let rules = rules_of(&record.version)?;
        check_size_limits(&event)?;
        self.check_not_suspended(sender, Some(&event))?;
        self.check_event_semantics(room, sender, &event)?;
        let auth_events = self.auth_events_for(&record, &rules, sender, &event)?;
        let (event_id, object) = self.build(
            &rules,
            Some(room),
            sender,
            &event,
            Links { prev_events: &record.extremities, auth_events: &auth_events, depth: pdu::next_depth(record.depth) },
        )?;
        let version = record.version.clone();
        let durable = self.check_and_persist(room, Some(record), version, event_id.clone(), object, txn)?;
        // The next event of this room may be built now; this one is acknowledged once durable.
        drop(guard);
        wait_durable(durable).await?;
        if event.kind == TimelineEventType::RoomMember {
            self.forget_directory_entries(room);
        }
        Ok(event_id)
    }

    /// The auth events a new event by `sender` needs, from the room's current state.
    fn auth_events_for(
        &self,
        record: &RoomRecord,
        rules: &ruma::room_version_rules::RoomVersionRules,
        sender: &UserId,
        event: &NewEvent,
    ) -> Result<Vec<OwnedEventId>> {
        let state = self.state.load(record.snapshot)?;
        let content_raw = serde_json::value::to_raw_value(&event.content).map_err(|e| Error::BadJson(e.to_string()))?;
        let auth_types = ruma::state_res::auth_types_for_event(
            &event.kind,
            sender,
            event.state_key.as_deref(),
            &content_raw,
            &rules.authorization,
        )
        .map_err(Error::BadJson)?;
        let mut auth_events = Vec::new();
        for (kind, key) in auth_types {
            if let Some(short) = self.state.short_key(&kind, &key)? {
                if let Some(id) = state.get(&short) {
                    if !auth_events.contains(id) {
                        auth_events.push(id.clone());
                    }
                }
            }
        }
        Ok(auth_events)
    }

    /// An unsigned event template for a remote server's user (`make_join`, `make_leave`,
    /// `make_knock`): linked to the room's current extremities and state, checked against the auth
    /// rules as if it were sent now, so a template we hand out would be accepted back.
    pub async fn template(
        &self,
        room: &RoomId,
        sender: &UserId,
        event: NewEvent,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let lock = self.lock(room);
        let _guard = lock.lock().await;
        let record = self.room(room)?.ok_or_else(|| Error::not_found("unknown room"))?;
        let rules = rules_of(&record.version)?;
        let auth_events = self.auth_events_for(&record, &rules, sender, &event)?;
        let (object, _) = self.assemble(
            &rules,
            Some(room),
            sender,
            &event,
            Links { prev_events: &record.extremities, auth_events: &auth_events, depth: pdu::next_depth(record.depth) },
        )?;
        let json = serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()))?;
        let placeholder = OwnedEventId::try_from("$template").map_err(|e| Error::Internal(e.to_string()))?;
        let pdu = Pdu::from_json(placeholder, &json).map_err(|e| Error::Internal(e.to_string()))?;
        let state = self.state.load(record.snapshot)?;
        self.check_auth(&rules, &pdu, Some(&state)).map_err(Error::Forbidden)?;
        self.enforce_access_rules(room, &pdu, &state)?;
        Ok((record.version, object))
    }

    /// Checks the server makes beyond the auth rules: a redaction needs the redacted event's sender
    /// or the power to redact; a canonical alias must point at this room.
    fn check_event_semantics(&self, room: &RoomId, sender: &UserId, event: &NewEvent) -> Result<()> {
        if event.kind == TimelineEventType::RoomRedaction {
            let target = event
                .redacts
                .clone()
                .or_else(|| {
                    event.content.get("redacts").and_then(|r| r.as_str()).and_then(|r| OwnedEventId::try_from(r).ok())
                })
                .ok_or_else(|| Error::BadJson("a redaction names the event it redacts".into()))?;
            let original = self.pdu(&target)?.filter(|p| {
                p.room_id.as_deref() == Some(room)
                    || self.meta(&target).ok().flatten().is_some_and(|m| m.room_id == room)
            });
            let original = original.ok_or_else(|| Error::not_found("the event to redact is not in this room"))?;
            let power = self.power(room)?;
            if original.sender != sender && power.of_user(sender) < power.redact {
                return Err(Error::forbidden("you may only redact your own events"));
            }
        }
        if event.kind.to_string() == "m.room.canonical_alias" && event.state_key.as_deref() == Some("") {
            let alias = event.content.get("alias").and_then(|a| a.as_str());
            let alt = event.content.get("alt_aliases").and_then(|a| a.as_array()).cloned().unwrap_or_default();
            for name in alias.into_iter().chain(alt.iter().filter_map(|a| a.as_str())) {
                let alias = ruma::RoomAliasId::parse(name)
                    .map_err(|e| Error::invalid_param(format!("invalid alias {name}: {e}")))?;
                if self.resolve_alias(&alias)?.is_none_or(|r| r.room_id != room) {
                    return Err(Error::BadAlias(format!("{name} does not point to this room")));
                }
            }
        }
        Ok(())
    }

    /// Builds, hashes and signs a PDU; returns its event id (the reference hash) and JSON.
    fn build(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        room: Option<&RoomId>,
        sender: &UserId,
        event: &NewEvent,
        links: Links<'_>,
    ) -> Result<(OwnedEventId, CanonicalJsonObject)> {
        let (mut object, v1_event_id) = self.assemble(rules, room, sender, event, links)?;
        hash_and_sign_event(self.server_name.as_str(), self.keys.keypair(), &mut object, &rules.redaction)
            .map_err(|e| Error::Internal(format!("signing failed: {e}")))?;
        let size = serde_json::to_vec(&object).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_PDU_BYTES {
            return Err(Error::TooLarge(format!("the event would be {size} bytes; the limit is {MAX_PDU_BYTES}")));
        }
        let event_id = match v1_event_id {
            Some(id) => id,
            None => {
                let hash =
                    reference_hash(&object, rules).map_err(|e| Error::Internal(format!("hashing failed: {e}")))?;
                format!("${hash}")
            }
        };
        let event_id = OwnedEventId::try_from(event_id).map_err(|e| Error::Internal(e.to_string()))?;
        Ok((event_id, object))
    }

    /// The unsigned PDU: fields, links, depth (room versions 1 and 2 also get their event id).
    fn assemble(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        room: Option<&RoomId>,
        sender: &UserId,
        event: &NewEvent,
        links: Links<'_>,
    ) -> Result<(CanonicalJsonObject, Option<String>)> {
        let Links { prev_events, auth_events, depth } = links;
        if !event.content.is_object() {
            return Err(Error::BadJson("event content must be a JSON object".into()));
        }
        let ids = |ids: &[OwnedEventId]| -> Result<CanonicalJsonValue> {
            let mut refs = Vec::with_capacity(ids.len());
            for id in ids {
                refs.push(match rules.events_reference_format {
                    // Room versions 1 and 2 reference events as [id, {"sha256": reference hash}].
                    EventsReferenceFormatVersion::V1 => {
                        let json = self.pdu_json(id)?.ok_or_else(|| Error::Internal(format!("unknown event {id}")))?;
                        let referenced: CanonicalJsonObject =
                            serde_json::from_slice(&json).map_err(|e| Error::Internal(e.to_string()))?;
                        let hash = reference_hash(&referenced, rules).map_err(|e| Error::Internal(e.to_string()))?;
                        let mut hashes = CanonicalJsonObject::new();
                        hashes.insert("sha256".into(), CanonicalJsonValue::String(hash));
                        CanonicalJsonValue::Array(vec![
                            CanonicalJsonValue::String(id.to_string()),
                            CanonicalJsonValue::Object(hashes),
                        ])
                    }
                    _ => CanonicalJsonValue::String(id.to_string()),
                });
            }
            Ok(CanonicalJsonValue::Array(refs))
        };
        let mut object = CanonicalJsonObject::new();
        // Room versions 1 and 2 carry a server-chosen `$random:server` id inside the event.
        let v1_event_id = match rules.event_id_format {
            EventIdFormatVersion::V1 => {
                let id = format!("${}:{}", crate::users::random_password(), self.server_name);
                object.insert("event_id".into(), CanonicalJsonValue::String(id.clone()));
                Some(id)
            }
            _ => None,
        };
        object.insert("type".into(), CanonicalJsonValue::String(event.kind.to_string()));
        object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
        if let Some(room) = room {
            object.insert("room_id".into(), CanonicalJsonValue::String(room.to_string()));
        }
        object.insert("origin_server_ts".into(), canonical(serde_json::json!(now_ms()))?);
        object.insert("content".into(), canonical(event.content.clone())?);
        if let Some(key) = &event.state_key {
            object.insert("state_key".into(), CanonicalJsonValue::String(key.clone()));
        }
        if let Some(redacts) = &event.redacts {
            object.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
        object.insert("prev_events".into(), ids(prev_events)?);
        object.insert("auth_events".into(), ids(auth_events)?);
        object.insert("depth".into(), canonical(serde_json::json!(depth))?);
        // Hashes and one signature add about 200 bytes; refuse oversized events before signing.
        let unsigned_size = serde_json::to_vec(&object).map(|v| v.len()).unwrap_or(usize::MAX);
        if unsigned_size + 256 > MAX_PDU_BYTES {
            return Err(Error::TooLarge(format!("the event would exceed {MAX_PDU_BYTES} bytes")));
        }
        Ok((object, v1_event_id))
    }

    /// Authorizes the event against the room's current state (which, for a local event pointing
    /// at the current extremities, is the state before it), then queues it for persisting (the
    /// writer notifies the stream). Returns the receiver that resolves once the event is durable.
    fn check_and_persist(
        &self,
        room: &RoomId,
        record: Option<RoomRecord>,
        version: RoomVersionId,
        event_id: OwnedEventId,
        object: CanonicalJsonObject,
        txn: Option<TxnKey>,
    ) -> Result<oneshot::Receiver<Result<(), String>>> {
        let rules = rules_of(&version)?;
        let json = serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()))?;
        let pdu = Pdu::from_json(event_id.clone(), &json).map_err(|e| Error::BadJson(format!("invalid event: {e}")))?;
        let state = match &record {
            Some(r) => Some(self.state.load(r.snapshot)?),
            None => None,
        };
        self.check_auth(&rules, &pdu, state.as_deref()).map_err(Error::Forbidden)?;
        if let Some(state) = &state {
            self.enforce_access_rules(room, &pdu, state)?;
        }
        let before = record.as_ref().map(|r| r.snapshot);
        let depth = u64::from(pdu.depth);
        self.persist(
            room,
            Plan {
                version,
                event_id: event_id.clone(),
                json,
                pdu,
                before,
                resolved: None,
                old_current: before,
                extremities: vec![event_id],
                depth,
                txn,
                historical: false,
                extra_visibility: Vec::new(),
                extra_members: Vec::new(),
            },
        )
    }

    /// Runs the room version's authorization rules for `pdu` against `state` (the state before
    /// it, or whatever state the caller checks against); `Err` carries the failed rule.
    pub(crate) fn check_auth(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        pdu: &Pdu,
        state: Option<&state::StateMap>,
    ) -> Result<(), String> {
        let fetch_event = |id: &EventId| self.auth_pdu(id);
        ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)?;
        let fetch_state = |kind: &StateEventType, key: &str| -> Option<Pdu> {
            let state = state?;
            let short = self.state.short_key(kind, key).ok()??;
            self.auth_pdu(state.get(&short)?)
        };
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)
    }

    /// Persists an authorized event with a stream position: its state, the room's new current
    /// state, extremities and depth, membership and visibility indexes, relations, a redaction's
    /// effect — one batch through the writer, local and remote events alike.
    fn persist(&self, room: &RoomId, plan: Plan) -> Result<oneshot::Receiver<Result<(), String>>> {
        let Plan {
            version,
            event_id,
            json,
            pdu,
            before,
            resolved,
            old_current,
            extremities,
            depth,
            txn,
            historical,
            extra_visibility,
            extra_members,
        } = plan;
        let rules = rules_of(&version)?;
        // Interning commits on its own; do it before taking the writer's queue.
        let short = match &pdu.state_key {
            Some(key) => Some(self.state.intern(&pdu.kind.to_string().into(), key)?),
            None => None,
        };
        if short.is_none() && before.is_none() {
            return Err(Error::Internal("a room's first event must be a state event".into()));
        }
        let replaces = match (short, before) {
            (Some(short), Some(before)) => self.state.load(before)?.get(&short).cloned(),
            _ => None,
        };
        let tables = &self.db.tables;
        let member_of = |pdu: &Pdu| {
            (pdu.kind == TimelineEventType::RoomMember)
                .then(|| pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()))
                .flatten()
                .map(|target| {
                    let membership = serde_json::from_str::<serde_json::Value>(pdu.content.get())
                        .ok()
                        .and_then(|c| c.get("membership").and_then(|m| m.as_str()).map(str::to_owned))
                        .unwrap_or_default();
                    (target, membership, pdu.event_id.clone())
                })
        };
        // The membership changes this write makes to the room's current state.
        let mut memberships = extra_members;
        let mut current_diff = None;
        let known = match &resolved {
            Some(Resolved::Snapshot(id)) => Some(*id),
            _ => None,
        };
        let target = match &resolved {
            None => None,
            Some(Resolved::Map(map)) => Some(std::borrow::Cow::Borrowed(map)),
            // The same snapshot as now: nothing changes.
            Some(Resolved::Snapshot(id)) if Some(*id) == old_current => None,
            Some(Resolved::Snapshot(id)) => Some(std::borrow::Cow::Owned((*self.state.load(*id)?).clone())),
        };
        match &target {
            None if resolved.is_some() || historical => {}
            None => memberships.extend(member_of(&pdu)),
            Some(target) => {
                let old = match old_current {
                    Some(s) => self.state.load(s)?,
                    None => Arc::new(state::StateMap::new()),
                };
                let added: Vec<(u64, OwnedEventId)> =
                    target.iter().filter(|(k, v)| old.get(k) != Some(v)).map(|(k, v)| (*k, v.clone())).collect();
                let removed: Vec<u64> = old.keys().filter(|k| !target.contains_key(k)).copied().collect();
                for (_, id) in &added {
                    let changed = if *id == event_id { Some(pdu.clone()) } else { self.pdu(id)? };
                    if let Some(changed) = changed {
                        memberships.extend(member_of(&changed));
                    }
                }
                current_diff = Some((added, removed));
            }
        }
        let visibility_change = if historical { None } else { visibility::VisibilityChange::of(&pdu) };
        // A join of someone already joined (a profile change) continues their joined period.
        let mut previous_joins = Vec::with_capacity(memberships.len());
        for (target, membership, _) in &memberships {
            previous_joins.push(if membership == "join" {
                self.membership(target, room)?.filter(|r| r.membership == "join").map(|r| r.period_start())
            } else {
                None
            });
        }
        // Relations are indexed within a room only: an event elsewhere naming one of this room's
        // events is not its relation.
        let relation =
            relates_to(&pdu).filter(|parent| self.meta(parent).ok().flatten().is_none_or(|m| m.room_id == room));
        let thread_root = relation.clone().filter(|_| rel_type(&pdu).as_deref() == Some("m.thread"));
        let redaction = match pdu.redacted_event() {
            Some(target) if self.redaction_applies(room, &pdu, &target)? => {
                self.auth_cache.lock().expect("auth cache").remove(&target);
                if self.pdu(&target)?.is_some_and(|p| p.is_state()) {
                    // State resolution reads the stored (now redacted) form of state events.
                    self.forget_resolutions();
                }
                self.redacted_form(&rules, &target, &event_id, &json)?
            }
            _ => None,
        };
        let txn_key = txn.map(|t| (t.user, t.device, t.txn_id));
        let mut room_record = None;
        let previous_depth = self.room(room)?.map(|r| r.depth).unwrap_or(0);
        let durable = self.writer.submit(&self.db, |batch, pos| {
            self.writer.touch_room(room, pos);
            let mut new_snapshots = Vec::new();
            let dag_snapshot = match short {
                Some(_) if historical => before.unwrap_or_default(),
                Some(short) => {
                    let id = self.state.derive(batch, before, &[(short, event_id.clone())], &[])?;
                    new_snapshots.push(id);
                    id
                }
                None => before.unwrap_or_default(),
            };
            let snapshot = match (known, &current_diff) {
                (Some(id), _) => id,
                (None, Some((added, removed))) => {
                    let id = self.state.derive(batch, old_current, added, removed)?;
                    new_snapshots.push(id);
                    id
                }
                (None, None) => dag_snapshot,
            };
            let record =
                RoomRecord { version: version.clone(), snapshot, extremities, depth: depth.max(previous_depth) };
            let meta = EventMeta {
                room_id: room.to_owned(),
                pos,
                snapshot,
                redacted_because: None,
                state_after: (dag_snapshot != snapshot).then_some(dag_snapshot),
                replaces: replaces.clone(),
            };
            tables.eventid_pdu.insert(batch, &event_id, &json);
            tables.eventid_meta.insert(batch, &event_id, &Json(meta.clone()));
            tables.eventid_outlier.remove(batch, &event_id);
            tables.pos_eventid.insert(batch, &Be64(pos), &event_id);
            tables.roomidpos_eventid.insert(batch, &(room.to_owned(), Be64(pos)), &event_id);
            if !historical {
                tables.roomid_room.insert(batch, &room.to_owned(), &Json(record.clone()));
                room_record = Some(record);
            }
            for change in &extra_visibility {
                change.write(tables, batch, room, pos);
            }
            if !memberships.is_empty() {
                self.writer.touch_members(room, pos);
            }
            for ((target, membership, member_event), previous_join) in memberships.iter().zip(&previous_joins) {
                let joined_since = (membership == "join").then_some(previous_join.unwrap_or(pos));
                let record = Json(MembershipRecord {
                    membership: membership.clone(),
                    event_id: member_event.clone(),
                    pos,
                    joined_since,
                });
                tables.useridroomid_membership.insert(batch, &(target.clone(), room.to_owned()), &record);
                tables.roomiduserid_membership.insert(batch, &(room.to_owned(), target.clone()), &record);
            }
            if let Some(change) = &visibility_change {
                change.write(tables, batch, room, pos);
            }
            if let Some(parent) = &relation {
                tables.parentpos_childeventid.insert(batch, &(parent.clone(), Be64(pos)), &event_id);
            }
            if let Some(root) = &thread_root {
                tables.roomidpos_threadroot.insert(batch, &(room.to_owned(), Be64(pos)), root);
            }
            let mut cleanup = Cleanup {
                pdus: vec![event_id.clone()],
                txn: txn_key.clone(),
                snapshots: new_snapshots,
                wake: Audience::Room(room.to_owned()),
            };
            let mut overlay = self.writer.pending.lock().expect("pending overlay");
            if let Some((target, redacted_json, target_meta)) = &redaction {
                tables.eventid_pdu.insert(batch, target, redacted_json);
                tables.eventid_meta.insert(batch, target, &Json(target_meta.clone()));
                overlay.pdus.insert(target.clone(), (redacted_json.clone(), target_meta.clone()));
                cleanup.pdus.push(target.clone());
            }
            if let Some(key) = &txn_key {
                tables.useriddevicetxn_eventid.insert(batch, key, &event_id);
                // What the client chose, without the prefix that keeps other kinds apart.
                let client_txn = key.2.strip_prefix("redact:").unwrap_or(&key.2).to_owned();
                tables.eventid_devicetxn.insert(batch, &event_id, &Json((key.1.clone(), client_txn)));
                overlay.txns.insert(key.clone(), event_id.clone());
            }
            overlay.pdus.insert(event_id.clone(), (json.clone(), meta));
            Ok(cleanup)
        })?;
        if let Some(record) = room_record {
            self.records.lock().expect("room records").insert(room.to_owned(), record);
        }
        let origin =
            if pdu.sender.server_name() == self.server_name { &self.appended.local } else { &self.appended.remote };
        origin.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if pdu.kind == TimelineEventType::RoomMember || current_diff.is_some() {
            self.forget_directory_entries(room);
        }
        Ok(durable)
    }

    /// Adds `unsigned.transaction_id` to the events `user` sent from `device` with a transaction
    /// id, as the spec asks for the sending device's copy: clients match their local echo by it.
    pub fn add_transaction_ids(
        &self,
        user: &UserId,
        device: &ruma::DeviceId,
        events: &mut [serde_json::Value],
    ) -> Result<()> {
        for event in events.iter_mut().filter(|e| e["sender"].as_str() == Some(user.as_str())) {
            let Some(id) = event["event_id"].as_str().and_then(|i| OwnedEventId::try_from(i).ok()) else { continue };
            if let Some(Json((sender_device, txn))) = self.db.tables.eventid_devicetxn.get(&id)? {
                if sender_device == device {
                    if !event["unsigned"].is_object() {
                        event["unsigned"] = serde_json::json!({});
                    }
                    event["unsigned"]["transaction_id"] = serde_json::json!(txn);
                }
            }
        }
        Ok(())
    }

    /// Whether a redaction takes effect on its target: the redaction's sender sent the target, is
    /// on the target sender's server, or holds the power to redact (the auth rules of newer room
    /// versions leave this check to the server).
    fn redaction_applies(&self, room: &RoomId, redaction: &Pdu, target: &EventId) -> Result<bool> {
        let Some(original) = self.pdu(target)? else { return Ok(true) };
        if original.sender.server_name() == redaction.sender.server_name() {
            return Ok(true);
        }
        let power = self.power(room)?;
        Ok(power.of_user(&redaction.sender) >= power.redact)
    }

    /// The redacted form of a redaction's target (the room version's redaction algorithm), with
    /// its metadata pointing at the redaction; `None` when the target is unknown here.
    fn redacted_form(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        target: &EventId,
        redaction_id: &OwnedEventId,
        redaction_json: &[u8],
    ) -> Result<Option<(OwnedEventId, Vec<u8>, EventMeta)>> {
        let (Some(json), Some(mut meta)) = (self.pdu_json(target)?, self.meta(target)?) else { return Ok(None) };
        let object: CanonicalJsonObject = serde_json::from_slice(&json).map_err(|e| Error::Internal(e.to_string()))?;
        let because: CanonicalJsonObject =
            serde_json::from_slice(redaction_json).map_err(|e| Error::Internal(e.to_string()))?;
        let redacted = redact(object, &rules.redaction, Some(RedactedBecause::from_json(because)))
            .map_err(|e| Error::Internal(format!("redaction failed: {e}")))?;
        let bytes = serde_json::to_vec(&redacted).map_err(|e| Error::Internal(e.to_string()))?;
        meta.redacted_because = Some(redaction_id.clone());
        Ok(Some((target.to_owned(), bytes, meta)))
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
