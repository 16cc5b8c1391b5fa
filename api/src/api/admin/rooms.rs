//! Rooms: list with search, order and paging; details; members; state; forward extremities.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::get,
    Router,
};
use ruma::{events::StateEventType, OwnedRoomId, RoomId};
use serde_json::{json, Value};

use super::{ok, paginate, Admin, Answer, Body, Params};
use crate::{api::error::ApiError, error::Error, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/rooms", get(list))
        .route("/_synapse/admin/v1/rooms/{room_id}", get(details))
        .route("/_synapse/admin/v1/rooms/{room_id}/members", get(members))
        .route("/_synapse/admin/v1/rooms/{room_id}/state", get(state))
        .route(
            "/_synapse/admin/v1/rooms/{room_id}/forward_extremities",
            get(forward_extremities).delete(prune_extremities),
        )
        .route("/_synapse/admin/v1/rooms/{room_id}/block", get(get_block).put(put_block))
}

/// A room this server holds, from its id: 400 for a bad id, 404 when unknown.
pub(crate) fn known_room(services: &Services, raw: &str) -> Result<OwnedRoomId, ApiError> {
    let room = RoomId::parse(raw).map_err(|e| Error::invalid_param(format!("invalid room id: {e}")))?;
    if !services.rooms.exists(&room)? {
        return Err(Error::not_found("Room not found").into());
    }
    Ok(room)
}

fn content(services: &Services, room: &RoomId, kind: StateEventType) -> Result<Option<(Value, String)>, ApiError> {
    Ok(services
        .rooms
        .state_event(room, &kind, "")?
        .map(|e| (serde_json::from_str(e.content.get()).unwrap_or_default(), e.sender.to_string())))
}

/// A room as Synapse's room list shows it.
pub(crate) fn room_json(services: &Services, room: &RoomId) -> Result<Value, ApiError> {
    let rooms = &services.rooms;
    let record = rooms.room(room)?.ok_or_else(|| Error::not_found("Room not found"))?;
    let summary = rooms.public_room(room)?;
    let members = rooms.members(room)?;
    let joined_local = members.iter().filter(|(u, m)| m.membership == "join" && services.users.is_local(u)).count();
    let create = content(services, room, StateEventType::RoomCreate)?;
    let field = |kind: StateEventType, name: &str| -> Result<Value, ApiError> {
        Ok(content(services, room, kind)?.and_then(|(c, _)| c.get(name).cloned()).unwrap_or(Value::Null))
    };
    Ok(json!({
        "room_id": room,
        "name": summary.name,
        "canonical_alias": summary.canonical_alias,
        "joined_members": summary.joined_members,
        "joined_local_members": joined_local,
        "version": record.version.as_str(),
        "creator": create.as_ref().map(|(_, sender)| sender.clone()),
        "encryption": field(StateEventType::RoomEncryption, "algorithm")?,
        "federatable": create.as_ref().map(|(c, _)| c.get("m.federate").and_then(Value::as_bool) != Some(false)).unwrap_or(true),
        "public": rooms.is_published(room)?,
        "join_rules": summary.join_rule,
        "guest_access": field(StateEventType::RoomGuestAccess, "guest_access")?,
        "history_visibility": field(StateEventType::RoomHistoryVisibility, "history_visibility")?,
        "state_events": rooms.full_state(record.snapshot)?.len(),
        "room_type": summary.room_type,
    }))
}

/// Every room this server holds as [`room_json`] shows it, those whose name, alias or id
/// contains `term` (any case) when given; the admin API's room list and the console search alike.
pub(crate) fn search_rooms(services: &Services, term: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let term = term.map(str::to_lowercase);
    let mut rows = Vec::new();
    for entry in services.db.tables.rooms.roomid_room.iter() {
        let (room, _) = entry.map_err(Error::from)?;
        let json = room_json(services, &room)?;
        if let Some(term) = &term {
            let hit = [&json["name"], &json["canonical_alias"], &json["room_id"]]
                .iter()
                .any(|v| v.as_str().is_some_and(|s| s.to_lowercase().contains(term.as_str())));
            if !hit {
                continue;
            }
        }
        rows.push(json);
    }
    Ok(rows)
}

/// `GET /_synapse/admin/v1/rooms`: `search_term` (name, alias or id), `order_by`, `dir`,
/// `from`, `limit`; answers `rooms`, `offset`, `total_rooms`, `next_batch`, `prev_batch`.
async fn list(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Answer {
    let (from, limit) = params.page()?;
    let order_by = params.str("order_by").unwrap_or("name");
    let known = [
        "name",
        "canonical_alias",
        "joined_members",
        "joined_local_members",
        "version",
        "creator",
        "encryption",
        "federatable",
        "public",
        "join_rules",
        "guest_access",
        "history_visibility",
        "state_events",
    ];
    if !known.contains(&order_by) {
        return Err(Error::invalid_param(format!("unknown order_by {order_by:?}")).into());
    }
    let mut rows = search_rooms(&services, params.str("search_term"))?;
    // Synapse's filters: `public_rooms` (published in the directory or not), `empty_rooms`
    // (no joined member left or not).
    if let Some(public) = params.bool("public_rooms")? {
        rows.retain(|r| r["public"].as_bool() == Some(public));
    }
    if let Some(empty) = params.bool("empty_rooms")? {
        rows.retain(|r| (r["joined_members"].as_u64() == Some(0)) == empty);
    }
    // Synapse's order: counts biggest first, text A to Z; `dir=b` reverses.
    let numeric = matches!(order_by, "joined_members" | "joined_local_members" | "state_events");
    rows.sort_by(|a, b| {
        let (x, y) = (&a[order_by], &b[order_by]);
        let primary = if numeric {
            y.as_u64().cmp(&x.as_u64())
        } else {
            x.to_string().to_lowercase().cmp(&y.to_string().to_lowercase())
        };
        primary.then_with(|| a["room_id"].as_str().cmp(&b["room_id"].as_str()))
    });
    if params.backwards()? {
        rows.reverse();
    }
    let total = rows.len();
    let (page, next) = paginate(rows, from, limit);
    let mut body = json!({ "rooms": page, "offset": from, "total_rooms": total });
    if let Some(next) = next {
        body["next_batch"] = json!(next);
    }
    if from > 0 {
        body["prev_batch"] = json!(from.saturating_sub(limit));
    }
    ok(body)
}

async fn details(State(services): State<Arc<Services>>, _: Admin, Path(room): Path<String>) -> Answer {
    let room = known_room(&services, &room)?;
    let mut out = room_json(&services, &room)?;
    let summary = services.rooms.public_room(&room)?;
    out["avatar"] = json!(summary.avatar_url);
    out["topic"] = json!(summary.topic);
    let mut devices = 0;
    for (user, m) in services.rooms.members(&room)? {
        if m.membership == "join" && services.users.is_local(&user) {
            devices += services.users.devices(&user)?.len();
        }
    }
    out["joined_local_devices"] = json!(devices);
    out["forgotten"] = json!(false);
    ok(out)
}

async fn members(State(services): State<Arc<Services>>, _: Admin, Path(room): Path<String>) -> Answer {
    let room = known_room(&services, &room)?;
    let joined: Vec<String> = services
        .rooms
        .members(&room)?
        .into_iter()
        .filter(|(_, m)| m.membership == "join")
        .map(|(u, _)| u.to_string())
        .collect();
    ok(json!({ "total": joined.len(), "members": joined }))
}

async fn state(State(services): State<Arc<Services>>, _: Admin, Path(room): Path<String>) -> Answer {
    let room = known_room(&services, &room)?;
    let record = services.rooms.room(&room)?.ok_or_else(|| Error::not_found("Room not found"))?;
    let mut events = Vec::new();
    for (_, event_id) in services.rooms.full_state(record.snapshot)? {
        if let Some(event) = services.rooms.client_event(&event_id)? {
            events.push(event);
        }
    }
    ok(json!({ "state": events }))
}

async fn forward_extremities(State(services): State<Arc<Services>>, _: Admin, Path(room): Path<String>) -> Answer {
    let room = known_room(&services, &room)?;
    let record = services.rooms.room(&room)?.ok_or_else(|| Error::not_found("Room not found"))?;
    let mut results = Vec::new();
    for event_id in &record.extremities {
        let pdu = services.rooms.pdu(event_id)?;
        results.push(json!({
            "event_id": event_id,
            "state_group": Value::Null,
            "depth": pdu.as_ref().map(|p| p.depth),
            "received_ts": pdu.as_ref().map(|p| p.origin_server_ts),
        }));
    }
    ok(json!({ "count": results.len(), "results": results }))
}

/// `DELETE …/forward_extremities`: keeps only the deepest; `{ "deleted": n }`.
async fn prune_extremities(State(services): State<Arc<Services>>, admin: Admin, Path(room): Path<String>) -> Answer {
    let room = known_room(&services, &room)?;
    let deleted = services.rooms.prune_extremities(&room).await?;
    admin.audit(&services, "room.forward_extremities.delete", room.as_str(), json!({ "deleted": deleted }))?;
    ok(json!({ "deleted": deleted }))
}

/// `GET …/block`: `{ "block": bool, "user_id": admin }` (no `user_id` when not blocked).
async fn get_block(State(services): State<Arc<Services>>, _: Admin, Path(room): Path<String>) -> Answer {
    let room = RoomId::parse(&room).map_err(|e| Error::invalid_param(format!("invalid room id: {e}")))?;
    ok(match services.rooms.blocked_by(&room)? {
        Some(admin) => json!({ "block": true, "user_id": admin }),
        None => json!({ "block": false }),
    })
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Block {
    block: bool,
}

/// `PUT …/block`: blocks (or unblocks) the room, known here or not.
async fn put_block(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(room): Path<String>,
    Body(body): Body<Block>,
) -> Answer {
    set_block(&services, &admin, &room, body.block)?;
    ok(json!({ "block": body.block }))
}

/// Blocks (or unblocks) a room, known here or not, and records it; shared with the console.
pub(crate) fn set_block(services: &Services, admin: &Admin, raw: &str, block: bool) -> Result<OwnedRoomId, ApiError> {
    let room = RoomId::parse(raw).map_err(|e| Error::invalid_param(format!("invalid room id: {e}")))?;
    services.rooms.set_blocked(&room, block.then_some(admin.0.user_id.as_str()))?;
    admin.audit(services, if block { "room.block" } else { "room.unblock" }, room.as_str(), json!({}))?;
    Ok(room)
}
