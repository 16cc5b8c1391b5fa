//! What a room says of itself to people outside it, for space hierarchies: its summary and its
//! `m.space.child` links. The walk over spaces (local and remote rooms) is `crate::spaces`.

use ruma::{events::StateEventType, OwnedRoomId, OwnedServerName, RoomId, ServerName, UserId};
use serde_json::{json, Value};

use super::Rooms;
use crate::error::Result;

/// A child link of a space: the child room, servers to reach it, and the stripped
/// `m.space.child` event clients are shown.
#[derive(Debug, Clone)]
pub struct SpaceChild {
    pub room_id: OwnedRoomId,
    pub via: Vec<OwnedServerName>,
    pub suggested: bool,
    /// The spec's sort key: valid `order`, then the link's timestamp, then the room id.
    pub order: (Option<String>, u64),
    pub event: Value,
}

/// Who asks to preview a room: one of our users, or another server (for its users).
#[derive(Debug, Clone, Copy)]
pub enum Previewer<'a> {
    User(&'a UserId),
    Server(&'a ServerName),
}

impl Rooms {
    /// The room's summary in the spec's shape (`RoomSummary`: name, topic, alias, avatar, type,
    /// member count, join rule with its allowed rooms, visibility flags, encryption, version).
    pub fn summary(&self, room: &RoomId) -> Result<Value> {
        let public = self.public_room(room)?;
        let mut summary = json!({
            "room_id": room,
            "num_joined_members": public.joined_members,
            "world_readable": public.world_readable,
            "guest_can_join": public.guest_can_join,
            "join_rule": public.join_rule.as_deref().unwrap_or("invite"),
        });
        let optional = [
            ("name", public.name),
            ("topic", public.topic),
            ("canonical_alias", public.canonical_alias),
            ("avatar_url", public.avatar_url),
            ("room_type", public.room_type),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                summary[key] = json!(value);
            }
        }
        if matches!(summary["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
            summary["allowed_room_ids"] = json!(self.allowed_rooms(room)?);
        }
        if let Some(e) = self.state_event(room, &StateEventType::RoomEncryption, "")? {
            let content: Value = serde_json::from_str(e.content.get()).unwrap_or_default();
            if let Some(algorithm) = content["algorithm"].as_str() {
                summary["encryption"] = json!(algorithm);
            }
        }
        if let Some(record) = self.room(room)? {
            summary["room_version"] = json!(record.version);
        }
        Ok(summary)
    }

    /// The rooms whose members may join a restricted room without an invite.
    fn allowed_rooms(&self, room: &RoomId) -> Result<Vec<OwnedRoomId>> {
        let Some(rules) = self.state_event(room, &StateEventType::RoomJoinRules, "")? else { return Ok(Vec::new()) };
        let content: Value = serde_json::from_str(rules.content.get()).unwrap_or_default();
        Ok(content["allow"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.room_membership")
            .filter_map(|e| e["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()))
            .collect())
    }

    /// The room's `m.space.child` links that name servers (an empty `via` removes a link),
    /// in the spec's order.
    pub fn space_children(&self, room: &RoomId, suggested_only: bool) -> Result<Vec<SpaceChild>> {
        let Some(record) = self.room(room)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for ((kind, state_key), event_id) in self.full_state(record.snapshot)? {
            if kind != StateEventType::SpaceChild {
                continue;
            }
            let (Some(pdu), Ok(child)) = (self.pdu(&event_id)?, RoomId::parse(&state_key)) else { continue };
            let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
            let event = json!({
                "type": "m.space.child",
                "state_key": state_key,
                "content": content,
                "sender": pdu.sender,
                "origin_server_ts": pdu.origin_server_ts,
            });
            if let Some(link) = child_link(child.to_owned(), &event, suggested_only) {
                out.push(link);
            }
        }
        sort_children(&mut out);
        Ok(out)
    }

    /// Whether `who` may see the room's summary: its members (or, for a server, any of its
    /// users) and anyone when the room is world-readable or open to joining or knocking;
    /// restricted rooms to members of an allowed room (a server is given those, with
    /// `allowed_room_ids`, to decide for its users).
    pub fn may_preview(&self, who: Previewer<'_>, room: &RoomId) -> Result<bool> {
        let summary = self.summary(room)?;
        if summary["world_readable"] == true
            || matches!(summary["join_rule"].as_str(), Some("public" | "knock" | "knock_restricted"))
        {
            return Ok(true);
        }
        let restricted = summary["join_rule"] == "restricted";
        match who {
            Previewer::User(user) => {
                if self.membership(user, room)?.is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite")) {
                    return Ok(true);
                }
                Ok(restricted && self.allowed_rooms(room)?.iter().any(|r| self.is_joined(user, r).unwrap_or(false)))
            }
            Previewer::Server(server) => Ok(restricted
                || self
                    .members(room)?
                    .iter()
                    .any(|(u, m)| u.server_name() == server && matches!(m.membership.as_str(), "join" | "invite"))),
        }
    }
}

/// A child link from a stripped `m.space.child` event (ours or another server's); `None` when
/// the link is removed (no `via`) or not suggested while only suggested ones are wanted.
pub fn child_link(room_id: OwnedRoomId, event: &Value, suggested_only: bool) -> Option<SpaceChild> {
    let content = &event["content"];
    let via: Vec<OwnedServerName> = content["via"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().and_then(|s| OwnedServerName::try_from(s).ok()))
        .collect();
    let suggested = content["suggested"] == true;
    if via.is_empty() || (suggested_only && !suggested) {
        return None;
    }
    let order = content["order"]
        .as_str()
        .filter(|o| o.len() <= 50 && o.chars().all(|c| ('\u{20}'..='\u{7e}').contains(&c)))
        .map(str::to_owned);
    let ts = event["origin_server_ts"].as_u64().unwrap_or(u64::MAX);
    Some(SpaceChild { room_id, via, suggested, order: (order, ts), event: event.clone() })
}

/// The spec's order of a space's children: those with an `order` first, by it; then by the
/// link's timestamp; then by room id.
pub fn sort_children(children: &mut [SpaceChild]) {
    children.sort_by(|a, b| {
        let key = |c: &SpaceChild| (c.order.0.is_none(), c.order.0.clone(), c.order.1, c.room_id.clone());
        key(a).cmp(&key(b))
    });
}
