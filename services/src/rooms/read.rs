//! Reading rooms: timelines in both directions, context, single events, state, members and
//! relations, filtered by what the reader may see.

use std::collections::BTreeSet;

use ruma::{events::StateEventType, EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::{pdu, visibility::Reader, Rooms};
use crate::{
    db::codec::{prefix, Be64, Codec},
    error::{Error, Result},
};

/// The most events one `timestamp_to_event` request reads.
const MAX_TIMESTAMP_SCAN: usize = 100_000;

/// The most events one `/messages` request reads, however many its filter drops.
const MAX_SCANNED: usize = 1_000;

/// A pagination token: a boundary between stream positions ("before position N").
pub fn token(pos: u64) -> String {
    format!("t{pos}")
}

/// Where a page starts and the inclusive positions it reads: backwards, the positions before
/// `from` down to `to`; forwards, from `from` up to (not including) `to`. `None`: nothing to read.
fn page_bounds(from: Option<u64>, to: Option<u64>, backwards: bool) -> (u64, Option<(u64, u64)>) {
    let start_pos = from.unwrap_or(if backwards { u64::MAX } else { 0 });
    let bounds = if backwards {
        start_pos.checked_sub(1).map(|hi| (to.unwrap_or(0), hi))
    } else {
        match to {
            Some(t) => t.checked_sub(1).map(|hi| (start_pos, hi)),
            None => Some((start_pos, u64::MAX)),
        }
    };
    (start_pos, bounds)
}

pub fn parse_token(token: &str) -> Result<u64> {
    token
        .strip_prefix('t')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::invalid_param(format!("invalid pagination token {token:?}")))
}

/// Reads a position where the spec takes any token: a pagination token (`t<pos>`, "before
/// pos") or a sync token (`s<pos>_<typing>`, "after pos", which matrix-js-sdk sends as `/members?at=`).
pub fn parse_any_token(token: &str) -> Result<u64> {
    if token.starts_with('s') {
        let pos = crate::sync::token::SyncToken::parse(token)?.pos;
        return Ok(pos.saturating_add(1));
    }
    parse_token(token)
}

/// Which events a client wants (the event-selection part of a Matrix filter).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub types: Option<Vec<String>>,
    pub not_types: Vec<String>,
    pub senders: Option<Vec<String>>,
    pub not_senders: Vec<String>,
    pub lazy_load_members: bool,
}

fn type_matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(start) => kind.starts_with(start),
        None => pattern == kind,
    }
}

impl EventFilter {
    pub fn accepts(&self, event: &Value) -> bool {
        let kind = event["type"].as_str().unwrap_or("");
        let sender = event["sender"].as_str().unwrap_or("");
        if self.not_types.iter().any(|p| type_matches(p, kind)) || self.not_senders.iter().any(|s| s == sender) {
            return false;
        }
        if let Some(types) = &self.types {
            if !types.iter().any(|p| type_matches(p, kind)) {
                return false;
            }
        }
        if let Some(senders) = &self.senders {
            if !senders.iter().any(|s| s == sender) {
                return false;
            }
        }
        true
    }
}

/// Which relations `/relations` returns: any (`rel_type` none), one type, one type and event type.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelationFilter<'a> {
    pub rel_type: Option<&'a str>,
    pub event_type: Option<&'a str>,
}

/// A page of a room's timeline.
pub struct Page {
    pub chunk: Vec<Value>,
    pub start: String,
    pub end: Option<String>,
    /// Member events of the chunk's senders, when lazy-loading members.
    pub state: Vec<Value>,
}

/// The events around one event, and the tokens bounding them.
pub struct Around {
    pub before: Vec<Value>,
    pub after: Vec<Value>,
    pub start: String,
    pub end: String,
}

/// A stored event's JSON, its room, and the `unsigned` members the server adds to it.
type ClientEventInputs = (Vec<u8>, OwnedRoomId, Option<serde_json::Map<String, Value>>);

impl Rooms {
    /// A stored event in client format, with `redacted_because` when it was redacted.
    pub fn client_event(&self, event_id: &EventId) -> Result<Option<Value>> {
        Ok(self.client_event_inputs(event_id)?.map(|(json, room, unsigned)| {
            pdu::client_event(&event_id.to_owned(), &room, &json, unsigned.map(Value::Object))
        }))
    }

    /// [`Self::client_event`] as JSON text (`pdu::client_event_json`), for who passes it on.
    pub fn client_event_json(&self, event_id: &EventId) -> Result<Option<String>> {
        Ok(self
            .client_event_inputs(event_id)?
            .map(|(json, room, unsigned)| pdu::client_event_json(event_id, &room, &json, unsigned.unwrap_or_default())))
    }

    /// What a client event is made of: the stored event, its room, and the `unsigned` members
    /// the server adds (`redacted_because`, `replaces_state`; none for state held outside the
    /// timeline).
    fn client_event_inputs(&self, event_id: &EventId) -> Result<Option<ClientEventInputs>> {
        let Some(json) = self.pdu_json(event_id)? else { return Ok(None) };
        let Some(meta) = self.meta(event_id)? else {
            // State of a room joined over federation is held outside the timeline.
            return Ok(self.outlier(event_id)?.filter(|o| !o.rejected).map(|o| (json, o.room_id, None)));
        };
        let mut unsigned = serde_json::Map::new();
        if let Some(redaction) = &meta.redacted_because {
            if let Some(r) = self.pdu_json(redaction)? {
                unsigned.insert("redacted_because".into(), pdu::client_event(redaction, &meta.room_id, &r, None));
            }
        }
        if let Some(replaced) = &meta.replaces {
            unsigned.insert("replaces_state".into(), replaced.as_str().into());
        }
        Ok(Some((json, meta.room_id, Some(unsigned))))
    }

    /// `GET /messages`.
    #[allow(clippy::too_many_arguments)]
    pub fn messages(
        &self,
        user: &UserId,
        room: &RoomId,
        from: Option<u64>,
        to: Option<u64>,
        backwards: bool,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Page> {
        let reader = self.reader(user, room)?;
        self.page(&reader, from, to, backwards, limit, filter)
    }

    /// A page of the timeline as a server admin reads it (`/_synapse/admin/v1/rooms/{room}/messages`):
    /// every event, whatever their own membership; same bounds and tokens as [`Rooms::messages`].
    pub fn messages_as_admin(
        &self,
        room: &RoomId,
        from: Option<u64>,
        to: Option<u64>,
        backwards: bool,
        limit: usize,
    ) -> Result<Page> {
        let (start_pos, bounds) = page_bounds(from, to, backwards);
        let mut chunk = Vec::new();
        let mut end = None;
        if let Some((lo, hi)) = bounds {
            for entry in self.scan_ranges(room, vec![(lo, hi)], !backwards) {
                let (pos, event_id) = entry?;
                if chunk.len() >= limit {
                    end = Some(token(if backwards { pos + 1 } else { pos }));
                    break;
                }
                if let Some(event) = self.client_event(&event_id)? {
                    chunk.push(event);
                }
            }
        }
        Ok(Page { chunk, start: token(start_pos.min(u64::MAX - 1)), end, state: Vec::new() })
    }

    /// The admin API's `timestamp_to_event`: like [`Rooms::event_at_timestamp`], over every
    /// event of the room whatever the admin's membership.
    pub fn event_at_timestamp_as_admin(
        &self,
        room: &RoomId,
        ts: u64,
        forward: bool,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        for entry in self.scan_ranges(room, vec![(0, u64::MAX)], forward).take(MAX_TIMESTAMP_SCAN) {
            let (_, event_id) = entry?;
            let Some(pdu) = self.pdu(&event_id)? else { continue };
            let at = u64::from(pdu.origin_server_ts.0);
            if (forward && at >= ts) || (!forward && at <= ts) {
                return Ok(Some((event_id, at)));
            }
        }
        Ok(None)
    }

    /// A page of the timeline as `reader` may see it. Reads at most [`MAX_SCANNED`] events (or
    /// four times the limit): a filter that matches nothing answers with what it found and a token
    /// to go on, instead of reading the whole room.
    fn page(
        &self,
        reader: &Reader<'_>,
        from: Option<u64>,
        to: Option<u64>,
        backwards: bool,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Page> {
        let (start_pos, bounds) = page_bounds(from, to, backwards);
        let max_scanned = MAX_SCANNED.max(limit.saturating_mul(4));
        let mut chunk = Vec::new();
        let mut last_pos = None;
        let mut exhausted = true;
        let mut scanned = 0;
        if let Some((lo, hi)) = bounds {
            for entry in reader.timeline(lo, hi, !backwards) {
                let (pos, event_id) = entry?;
                if chunk.len() >= limit || scanned >= max_scanned {
                    exhausted = false;
                    break;
                }
                scanned += 1;
                last_pos = Some(pos);
                if let Some(event) = reader.event(pos, &event_id)? {
                    if filter.accepts(&event) {
                        chunk.push(event);
                    }
                }
            }
        }
        let end = match (last_pos, exhausted) {
            (Some(pos), false) => Some(token(if backwards { pos } else { pos + 1 })),
            _ => None,
        };
        let state = if filter.lazy_load_members { self.member_events_of(reader, &chunk)? } else { Vec::new() };
        Ok(Page { chunk, start: token(start_pos.min(u64::MAX - 1)), end, state })
    }

    /// Member events of the senders of `events` (lazy-loading members), from the state the
    /// reader may read.
    fn member_events_of(&self, reader: &Reader<'_>, events: &[Value]) -> Result<Vec<Value>> {
        if !reader.may_read_state()? {
            return Ok(Vec::new());
        }
        let snapshot = reader.state_snapshot()?;
        let senders: BTreeSet<&str> = events.iter().filter_map(|e| e["sender"].as_str()).collect();
        let mut out = Vec::new();
        for sender in senders {
            if let Some(id) = self.state_event_id_in(snapshot, &StateEventType::RoomMember, sender)? {
                if let Some(event) = self.client_event(&id)? {
                    out.push(event);
                }
            }
        }
        Ok(out)
    }

    /// One event, if the user may see it (`404` otherwise, as for an unknown event).
    /// `timestamp_to_event`: the event the user may see closest to `ts` in the direction asked
    /// (the last at or before it going backwards, the first at or after it going forwards), by
    /// timeline order; at most [`MAX_TIMESTAMP_SCAN`] events are read.
    pub fn event_at_timestamp(
        &self,
        user: &UserId,
        room: &RoomId,
        ts: u64,
        forward: bool,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        let reader = self.reader(user, room)?;
        let mut best: Option<(OwnedEventId, u64)> = None;
        for entry in reader.timeline(0, u64::MAX, forward).take(MAX_TIMESTAMP_SCAN) {
            let (pos, event_id) = entry?;
            let Some(event) = reader.event(pos, &event_id)? else { continue };
            let Some(at) = event["origin_server_ts"].as_u64() else { continue };
            let fits = if forward { at >= ts } else { at <= ts };
            if fits {
                best = Some((event_id, at));
                break;
            }
        }
        Ok(best)
    }

    pub fn event_for(&self, user: &UserId, room: &RoomId, event_id: &EventId) -> Result<Value> {
        let reader = self.reader(user, room)?;
        self.event_as(&reader, event_id).map(|(event, _)| event)
    }

    fn event_as(&self, reader: &Reader<'_>, event_id: &EventId) -> Result<(Value, u64)> {
        let not_found = || Error::not_found("event not found");
        let meta = self.meta(event_id)?.filter(|m| m.room_id == reader.room()).ok_or_else(not_found)?;
        let event = reader.event(meta.pos, event_id)?.ok_or_else(not_found)?;
        Ok((event, meta.pos))
    }

    /// `GET /context/{eventId}`: the event, some before and after, and the state at it.
    pub fn context(
        &self,
        user: &UserId,
        room: &RoomId,
        event_id: &EventId,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<(Value, Page, Page, Vec<Value>)> {
        let reader = self.reader(user, room)?;
        let (event, pos) = self.event_as(&reader, event_id)?;
        let meta = self.meta(event_id)?.ok_or_else(|| Error::not_found("event not found"))?;
        let before = self.page(&reader, Some(pos), None, true, limit / 2, filter)?;
        let after = self.page(&reader, Some(pos + 1), None, false, limit - limit / 2, filter)?;
        // The state at the event belongs to those who were in the room, or may read it openly;
        // anyone else gets only the state events they may see one by one.
        let whole_state = reader.may_read_state()? || reader.window()?.world_readable_at(pos);
        let mut state = Vec::new();
        for ((kind, key), id) in self.full_state(meta.snapshot)? {
            if filter.lazy_load_members && kind == StateEventType::RoomMember {
                let wanted = std::iter::once(&event)
                    .chain(&before.chunk)
                    .chain(&after.chunk)
                    .any(|e| e["sender"].as_str() == Some(&key));
                if !wanted {
                    continue;
                }
            }
            let event = if whole_state {
                self.client_event(&id)?
            } else {
                match self.meta(&id)? {
                    Some(m) => reader.event(m.pos, &id)?,
                    None => None,
                }
            };
            if let Some(e) = event {
                state.push(e);
            }
        }
        Ok((event, before, after, state))
    }

    /// The events around a search result that the user may see: `before` earlier and `after`
    /// later ones, with the tokens bounding them.
    pub fn around(&self, user: &UserId, room: &RoomId, pos: u64, before: usize, after: usize) -> Result<Around> {
        let reader = self.reader(user, room)?;
        let filter = EventFilter::default();
        let earlier = self.page(&reader, Some(pos), None, true, before, &filter)?;
        let later = self.page(&reader, Some(pos + 1), None, false, after, &filter)?;
        Ok(Around {
            start: earlier.end.clone().unwrap_or_else(|| token(pos)),
            end: later.end.unwrap_or_else(|| token(pos + 1)),
            before: earlier.chunk,
            after: later.chunk,
        })
    }

    /// The state the user may see: current state while joined (or in a world-readable room),
    /// the state when they left after being joined; `403` for anyone else.
    pub fn visible_state(&self, user: &UserId, room: &RoomId) -> Result<Vec<((StateEventType, String), OwnedEventId)>> {
        let reader = self.reader(user, room)?;
        self.full_state(reader.state_snapshot()?)
    }

    /// The state snapshot of `/members?at=`: the state at the token, never past what the user may
    /// read (a departed member's view stops at their departure).
    pub fn members_snapshot(&self, user: &UserId, room: &RoomId, at: Option<u64>) -> Result<u64> {
        let reader = self.reader(user, room)?;
        let readable = reader.state_snapshot()?;
        let Some(at) = at else { return Ok(readable) };
        let limit = if reader.is_joined() || reader.window()?.world_readable_now() {
            u64::MAX
        } else {
            reader.window()?.departure().map_or(0, |d| d.saturating_add(1))
        };
        Ok(self.snapshot_before(room, at.min(limit))?.unwrap_or(readable))
    }

    /// Joined members of a room, for a reader who may see them now (`/joined_members`).
    pub fn joined_members_for(&self, user: &UserId, room: &RoomId) -> Result<Vec<(OwnedUserId, Value)>> {
        self.reader(user, room)?.require_current()?;
        self.joined_members(room)
    }

    /// The state snapshot in force just before `pos` (for `/members?at=`).
    pub fn snapshot_before(&self, room: &RoomId, pos: u64) -> Result<Option<u64>> {
        let key = (room.to_owned(), Be64(pos.saturating_sub(1))).encode();
        match self.db.tables.rooms.roomidpos_eventid.scan_from(prefix(&room.to_owned()), key, false).next() {
            Some(entry) => Ok(self.meta(&entry?.1)?.map(|m| m.snapshot)),
            None => Ok(None),
        }
    }

    /// Joined members with their display name and avatar.
    pub fn joined_members(&self, room: &RoomId) -> Result<Vec<(OwnedUserId, Value)>> {
        let mut out = Vec::new();
        for (user, m) in self.members(room)? {
            if m.membership == "join" {
                let content = self
                    .pdu(&m.event_id)?
                    .and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok())
                    .unwrap_or_default();
                out.push((user, content));
            }
        }
        Ok(out)
    }

    /// Whether `event` is a thread root of `room`: an event of the room with a thread reply.
    pub fn is_thread_root(&self, room: &RoomId, event: &EventId) -> Result<bool> {
        if self.meta(event)?.is_none_or(|m| m.room_id != room) {
            return Ok(false);
        }
        for entry in self.db.tables.rooms.parentpos_childeventid.scan_prefix(prefix(&event.to_owned())) {
            let (_, child) = entry?;
            let Some(pdu) = self.pdu(&child)? else { continue };
            let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
            if content["m.relates_to"]["rel_type"] == "m.thread" {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `GET /threads`: the room's thread roots the user may see, by latest reply (newest first),
    /// each with its thread summary; `participated` keeps those the user took part in.
    pub fn threads(
        &self,
        user: &UserId,
        room: &RoomId,
        participated: bool,
        from: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let reader = self.reader(user, room)?;
        let tables = &self.db.tables;
        let start = (room.to_owned(), Be64(from.unwrap_or(u64::MAX).saturating_sub(1))).encode();
        let mut seen = std::collections::HashSet::new();
        let (mut chunk, mut next) = (Vec::new(), None);
        for entry in tables.rooms.roomidpos_threadroot.scan_from(prefix(&room.to_owned()), start, false) {
            let ((_, Be64(pos)), root) = entry?;
            if chunk.len() >= limit {
                next = Some(token(pos + 1));
                break;
            }
            if !seen.insert(root.clone()) {
                continue;
            }
            // A thread with a reply after this page's start was listed on an earlier page.
            if from.is_some() && self.latest_thread_reply(&root)?.is_some_and(|latest| latest > pos) {
                continue;
            }
            let Some(meta) = self.meta(&root)?.filter(|m| m.room_id == room) else { continue };
            let Some(event) = reader.event(meta.pos, &root)? else { continue };
            let summary = &event["unsigned"]["m.relations"]["m.thread"];
            if summary.is_null() || (participated && summary["current_user_participated"] != true) {
                continue;
            }
            chunk.push(event);
        }
        Ok((chunk, next))
    }

    /// Position of the newest reply in the thread of `root`.
    fn latest_thread_reply(&self, root: &EventId) -> Result<Option<u64>> {
        let start = (root.to_owned(), Be64(u64::MAX)).encode();
        for entry in self.db.tables.rooms.parentpos_childeventid.scan_from(prefix(&root.to_owned()), start, false) {
            let ((_, Be64(pos)), child) = entry?;
            let Some(pdu) = self.pdu(&child)? else { continue };
            let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
            if content["m.relates_to"]["rel_type"] == "m.thread" {
                return Ok(Some(pos));
            }
        }
        Ok(None)
    }

    /// Events relating to `parent` (newest first), optionally of one relation and event type.
    pub fn relations(
        &self,
        user: &UserId,
        room: &RoomId,
        parent: &EventId,
        wanted: RelationFilter<'_>,
        from: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<Value>, Option<String>)> {
        let RelationFilter { rel_type, event_type } = wanted;
        let reader = self.reader(user, room)?;
        self.event_as(&reader, parent)?;
        let start = (parent.to_owned(), Be64(from.unwrap_or(u64::MAX).saturating_sub(1))).encode();
        let mut chunk = Vec::new();
        let mut next = None;
        for entry in self.db.tables.rooms.parentpos_childeventid.scan_from(prefix(&parent.to_owned()), start, false) {
            let ((_, Be64(pos)), child) = entry?;
            if chunk.len() >= limit {
                next = Some(token(pos + 1));
                break;
            }
            // Only relations from the same room: an event elsewhere naming this one is not its relation.
            let Some(event) = reader.event(pos, &child)? else { continue };
            if event["room_id"].as_str() != Some(room.as_str()) {
                continue;
            }
            let relation = &event["content"]["m.relates_to"];
            if rel_type.is_some_and(|r| relation["rel_type"].as_str() != Some(r)) {
                continue;
            }
            if rel_type.is_none() && relation["rel_type"].is_null() {
                continue;
            }
            if event_type.is_some_and(|t| event["type"].as_str() != Some(t)) {
                continue;
            }
            chunk.push(event);
        }
        Ok((chunk, next))
    }
}
