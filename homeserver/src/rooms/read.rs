//! Reading rooms: timelines in both directions, context, single events, state, members and
//! relations, filtered by what the reader may see.

use std::collections::BTreeSet;

use ruma::{events::StateEventType, EventId, OwnedEventId, OwnedUserId, RoomId, UserId};
use serde_json::Value;

use super::{pdu, Rooms};
use crate::{
    db::codec::{prefix, Be64, Codec},
    error::{Error, Result},
};

/// A pagination token: a boundary between stream positions ("before position N").
pub fn token(pos: u64) -> String {
    format!("t{pos}")
}

pub fn parse_token(token: &str) -> Result<u64> {
    token
        .strip_prefix('t')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| Error::invalid_param(format!("invalid pagination token {token:?}")))
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

impl Rooms {
    /// A stored event in client format, with `redacted_because` when it was redacted.
    pub fn client_event(&self, event_id: &EventId) -> Result<Option<Value>> {
        let Some(json) = self.pdu_json(event_id)? else { return Ok(None) };
        let Some(meta) = self.meta(event_id)? else { return Ok(None) };
        let unsigned = match &meta.redacted_because {
            Some(redaction) => match self.pdu_json(redaction)? {
                Some(r) => Some(
                    serde_json::json!({ "redacted_because": pdu::client_event(redaction, &meta.room_id, &r, None) }),
                ),
                None => None,
            },
            None => None,
        };
        Ok(Some(pdu::client_event(&event_id.to_owned(), &meta.room_id, &json, unsigned)))
    }

    /// The last stream position the user may see in the room: everything while joined, up to
    /// their departure after leaving, everything in world-readable rooms.
    pub fn visible_until(&self, user: &UserId, room: &RoomId) -> Result<u64> {
        if !self.exists(room)? {
            return Err(Error::forbidden("you are not in this room"));
        }
        let world_readable = self.world_readable(room)?;
        match self.membership(user, room)? {
            Some(m) if m.membership == "join" => Ok(u64::MAX),
            _ if world_readable => Ok(u64::MAX),
            Some(m) if m.membership == "leave" || m.membership == "ban" => Ok(m.pos),
            _ => Err(Error::forbidden("you are not in this room")),
        }
    }

    fn world_readable(&self, room: &RoomId) -> Result<bool> {
        Ok(self.state_event(room, &StateEventType::RoomHistoryVisibility, "")?.is_some_and(|e| {
            serde_json::from_str::<Value>(e.content.get())
                .ok()
                .and_then(|c| c["history_visibility"].as_str().map(|s| s == "world_readable"))
                .unwrap_or(false)
        }))
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
        let until = self.visible_until(user, room)?;
        let room_prefix = prefix(&room.to_owned());
        let start_pos = from.unwrap_or(if backwards { u64::MAX } else { 0 });
        let start_key = if backwards {
            // Reverse iteration starts at the nearest key at or before this one.
            (room.to_owned(), Be64(start_pos.saturating_sub(1))).encode()
        } else {
            (room.to_owned(), Be64(start_pos)).encode()
        };
        let mut chunk = Vec::new();
        let mut last_pos = None;
        let mut exhausted = true;
        for entry in self.db.tables.roomidpos_eventid.scan_from(room_prefix, start_key, !backwards) {
            let ((_, Be64(pos)), event_id) = entry?;
            if to.is_some_and(|t| if backwards { pos < t } else { pos >= t }) {
                break;
            }
            if pos > until {
                if backwards {
                    continue;
                }
                break;
            }
            if chunk.len() >= limit {
                exhausted = false;
                break;
            }
            last_pos = Some(pos);
            if let Some(event) = self.client_event(&event_id)? {
                if filter.accepts(&event) {
                    chunk.push(event);
                }
            }
        }
        let end = match (last_pos, exhausted) {
            (Some(pos), false) => Some(token(if backwards { pos } else { pos + 1 })),
            _ => None,
        };
        let state = if filter.lazy_load_members { self.member_events_of(room, &chunk)? } else { Vec::new() };
        Ok(Page { chunk, start: token(start_pos.min(u64::MAX - 1)), end, state })
    }

    /// Current member events of the senders of `events` (lazy-loading members).
    fn member_events_of(&self, room: &RoomId, events: &[Value]) -> Result<Vec<Value>> {
        let senders: BTreeSet<&str> = events.iter().filter_map(|e| e["sender"].as_str()).collect();
        let mut out = Vec::new();
        for sender in senders {
            if let Some(pdu) = self.state_event(room, &StateEventType::RoomMember, sender)? {
                if let Some(event) = self.client_event(&pdu.event_id)? {
                    out.push(event);
                }
            }
        }
        Ok(out)
    }

    /// One event, if the user may see it.
    pub fn event_for(&self, user: &UserId, room: &RoomId, event_id: &EventId) -> Result<Value> {
        let until = self.visible_until(user, room)?;
        let meta =
            self.meta(event_id)?.filter(|m| m.room_id == room).ok_or_else(|| Error::not_found("event not found"))?;
        if meta.pos > until {
            return Err(Error::not_found("event not found"));
        }
        self.client_event(event_id)?.ok_or_else(|| Error::not_found("event not found"))
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
        let event = self.event_for(user, room, event_id)?;
        let meta = self.meta(event_id)?.ok_or_else(|| Error::not_found("event not found"))?;
        let before = self.messages(user, room, Some(meta.pos), None, true, limit / 2, filter)?;
        let after = self.messages(user, room, Some(meta.pos + 1), None, false, limit - limit / 2, filter)?;
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
            if let Some(e) = self.client_event(&id)? {
                state.push(e);
            }
        }
        Ok((event, before, after, state))
    }

    /// The state the user may see: current state while joined, the state when they left otherwise.
    pub fn visible_state(&self, user: &UserId, room: &RoomId) -> Result<Vec<((StateEventType, String), OwnedEventId)>> {
        let until = self.visible_until(user, room)?;
        let record = self.room(room)?.ok_or_else(|| Error::forbidden("unknown room"))?;
        let snapshot = if until == u64::MAX {
            record.snapshot
        } else {
            let membership =
                self.membership(user, room)?.ok_or_else(|| Error::forbidden("you are not in this room"))?;
            self.meta(&membership.event_id)?.map(|m| m.snapshot).unwrap_or(record.snapshot)
        };
        self.full_state(snapshot)
    }

    /// The state snapshot in force just before `pos` (for `/members?at=`).
    pub fn snapshot_before(&self, room: &RoomId, pos: u64) -> Result<Option<u64>> {
        let key = (room.to_owned(), Be64(pos.saturating_sub(1))).encode();
        match self.db.tables.roomidpos_eventid.scan_from(prefix(&room.to_owned()), key, false).next() {
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
        self.event_for(user, room, parent)?;
        let until = self.visible_until(user, room)?;
        let start = (parent.to_owned(), Be64(from.unwrap_or(u64::MAX).saturating_sub(1))).encode();
        let mut chunk = Vec::new();
        let mut next = None;
        for entry in self.db.tables.parentpos_childeventid.scan_from(prefix(&parent.to_owned()), start, false) {
            let ((_, Be64(pos)), child) = entry?;
            if pos > until {
                continue;
            }
            if chunk.len() >= limit {
                next = Some(token(pos + 1));
                break;
            }
            let Some(event) = self.client_event(&child)? else { continue };
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
