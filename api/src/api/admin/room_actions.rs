//! Room actions: shut down (delete v1 and v2, with status), make a local user room admin,
//! read the messages.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::{delete, get, post},
    Router,
};
use ruma::{events::StateEventType, OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ok, Admin, Answer, Body, Params};
use crate::{
    api::error::ApiError,
    error::Error,
    rooms::{blocking::Replacement, NewEvent},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/rooms/{room_id}", delete(delete_v1))
        .route("/_synapse/admin/v2/rooms/{room_id}", delete(delete_v2))
        .route("/_synapse/admin/v2/rooms/{room_id}/delete_status", get(status_of_room))
        .route("/_synapse/admin/v2/rooms/delete_status/{delete_id}", get(status_by_id))
        .route("/_synapse/admin/v1/rooms/{room_id}/make_room_admin", post(make_room_admin))
        .route("/_synapse/admin/v1/rooms/{room_id}/messages", get(messages))
        .route("/_synapse/admin/v1/rooms/{room_id}/timestamp_to_event", get(timestamp_to_event))
        .route("/_synapse/admin/v1/purge_history/{room_id}", post(purge_history))
        .route("/_synapse/admin/v1/purge_history/{room_id}/{event_id}", post(purge_history_to_event))
        .route("/_synapse/admin/v1/purge_history_status/{purge_id}", get(purge_history_status))
        .route("/_synapse/admin/v1/rooms/{room_id}/context/{event_id}", get(context))
}

fn room_id(raw: &str) -> Result<OwnedRoomId, ApiError> {
    RoomId::parse(raw).map_err(|e| Error::invalid_param(format!("invalid room id: {e}")).into())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteRoom {
    new_room_user_id: Option<String>,
    room_name: Option<String>,
    message: Option<String>,
    #[serde(default)]
    block: bool,
    #[serde(default = "yes")]
    purge: bool,
    #[serde(default)]
    force_purge: bool,
}

fn yes() -> bool {
    true
}

/// Synapse's defaults for the room the members of a shut-down room are moved to.
const DEFAULT_NEW_ROOM_NAME: &str = "Content Violation Notification";
const DEFAULT_NEW_ROOM_MESSAGE: &str =
    "Sharing illegal content on this server is not permitted and rooms in violation will be blocked.";

/// The replacement room a deletion asks for (`new_room_user_id`: a local, active user), checked
/// before anything is changed.
fn replacement(services: &Services, body: &DeleteRoom) -> Result<Option<Replacement>, ApiError> {
    let Some(creator) = &body.new_room_user_id else {
        if body.room_name.is_some() || body.message.is_some() {
            return Err(Error::invalid_param("room_name and message need new_room_user_id").into());
        }
        return Ok(None);
    };
    let creator = ruma::UserId::parse(creator.as_str())
        .map_err(|e| ApiError::from(Error::invalid_param(format!("invalid new_room_user_id: {e}"))))?;
    if !services.users.is_local(&creator) {
        return Err(Error::invalid_param("new_room_user_id must be a user of this server").into());
    }
    if !services.users.is_active(&creator)? {
        return Err(Error::not_found("new_room_user_id is not an active user of this server").into());
    }
    Ok(Some(Replacement {
        creator,
        name: body.room_name.clone().unwrap_or_else(|| DEFAULT_NEW_ROOM_NAME.to_owned()),
        message: body.message.clone().unwrap_or_else(|| DEFAULT_NEW_ROOM_MESSAGE.to_owned()),
        version: services.config.rooms.default_version.clone(),
    }))
}

/// `DELETE /_synapse/admin/v1/rooms/{room}`: shuts the room down and answers when done.
async fn delete_v1(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(room): Path<String>,
    Body(body): Body<DeleteRoom>,
) -> Answer {
    let room = room_id(&room)?;
    let replacement = replacement(&services, &body)?;
    let report =
        shut_down(&services, &admin, &room, body.block, body.purge || body.force_purge, replacement.as_ref()).await?;
    ok(serde_json::to_value(report).map_err(|e| Error::Internal(e.to_string()))?)
}

/// Shuts a room down at once (local members leave, aliases go, unpublished; optionally blocked
/// and forgotten) and records it; the admin API's v1 deletion and the console share it.
pub(crate) async fn shut_down(
    services: &Services,
    admin: &Admin,
    room: &RoomId,
    block: bool,
    purge: bool,
    replacement: Option<&Replacement>,
) -> Result<crate::rooms::blocking::Shutdown, ApiError> {
    let block_by = block.then(|| admin.0.user_id.to_string());
    let report = services.rooms.shut_down(room, block_by.as_deref(), purge, replacement).await?;
    admin.audit(services, "room.delete", room.as_str(), json!({ "block": block, "purge": purge }))?;
    Ok(report)
}

/// `DELETE /_synapse/admin/v2/rooms/{room}`: starts the shutdown and answers its `delete_id`;
/// `…/delete_status` follows it.
async fn delete_v2(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(room): Path<String>,
    Body(body): Body<DeleteRoom>,
) -> Answer {
    let room = room_id(&room)?;
    let replacement = replacement(&services, &body)?;
    let delete_id = crate::users::random_password();
    // When it started, for the scheduled tasks' list (`memberships.rs`).
    let started_ts = crate::time::now_ms();
    services.room_deletions.lock().expect("deletions").insert(
        delete_id.clone(),
        (room.clone(), json!({ "delete_id": delete_id, "status": "shutting_down", "started_ts": started_ts })),
    );
    admin.audit(&services, "room.delete", room.as_str(), json!({ "block": body.block, "purge": body.purge }))?;
    let block_by = body.block.then(|| admin.0.user_id.to_string());
    let id = delete_id.clone();
    tokio::spawn(async move {
        let forget = body.purge || body.force_purge;
        let status = match services.rooms.shut_down(&room, block_by.as_deref(), forget, replacement.as_ref()).await {
            Ok(report) => {
                json!({ "delete_id": id, "status": "complete", "shutdown_room": report, "started_ts": started_ts })
            }
            Err(error) => {
                json!({ "delete_id": id, "status": "failed", "error": error.to_string(), "started_ts": started_ts })
            }
        };
        services.room_deletions.lock().expect("deletions").insert(id, (room, status));
    });
    ok(json!({ "delete_id": delete_id }))
}

async fn status_of_room(State(services): State<Arc<Services>>, _: Admin, Path(room): Path<String>) -> Answer {
    let room = room_id(&room)?;
    let results: Vec<Value> = services
        .room_deletions
        .lock()
        .expect("deletions")
        .values()
        .filter(|(r, _)| *r == room)
        .map(|(_, s)| s.clone())
        .collect();
    if results.is_empty() {
        return Err(Error::not_found("No delete task for room").into());
    }
    ok(json!({ "results": results }))
}

async fn status_by_id(State(services): State<Arc<Services>>, _: Admin, Path(delete_id): Path<String>) -> Answer {
    let status = services.room_deletions.lock().expect("deletions").get(&delete_id).map(|(_, s)| s.clone());
    let mut status = status.ok_or_else(|| Error::not_found("delete id not found"))?;
    if let Some(object) = status.as_object_mut() {
        object.remove("delete_id");
    }
    ok(status)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MakeAdmin {
    user_id: Option<String>,
}

/// `POST /_synapse/admin/v1/rooms/{room}/make_room_admin`: the local member with the most power
/// gives `user_id` (the admin by default) the same power, inviting and joining them first if
/// needed.
async fn make_room_admin(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(room): Path<String>,
    Body(body): Body<MakeAdmin>,
) -> Answer {
    let rooms = &services.rooms;
    let room = if room.starts_with('#') {
        let alias = RoomAliasId::parse(&room).map_err(|e| Error::invalid_param(format!("invalid alias: {e}")))?;
        rooms.resolve_alias(&alias)?.ok_or_else(|| Error::not_found("unknown alias"))?.room_id
    } else {
        room_id(&room)?
    };
    if !rooms.exists(&room)? {
        return Err(Error::not_found("Room not found").into());
    }
    let target = match &body.user_id {
        Some(raw) => UserId::parse(raw).map_err(|e| Error::invalid_param(format!("invalid user id: {e}")))?,
        None => admin.0.user_id.clone(),
    };
    if !services.users.is_local(&target) || !services.users.is_active(&target)? {
        return Err(Error::invalid_param("the user must be an active local user").into());
    }
    let power = rooms.power(&room)?;
    let granter = rooms
        .members(&room)?
        .into_iter()
        .filter(|(u, m)| m.membership == "join" && services.users.is_local(u) && *u != target)
        .max_by_key(|(u, _)| power.of_user(u))
        .map(|(u, _)| u)
        .filter(|u| power.can_send(u, "m.room.power_levels", true))
        .ok_or_else(|| Error::BadState("no local member of the room may change its power levels".into()))?;
    if !rooms.is_joined(&target, &room)? {
        if rooms.membership(&target, &room)?.map(|m| m.membership).as_deref() != Some("invite") {
            rooms.set_membership(&room, &granter, &target, "invite", None, serde_json::Map::new()).await?;
        }
        rooms.join(&room, &target, None).await?;
    }
    let granted = power.of_user(&granter);
    let mut content: Value = rooms
        .state_event(&room, &StateEventType::RoomPowerLevels, "")?
        .and_then(|e| serde_json::from_str(e.content.get()).ok())
        .unwrap_or_else(|| json!({}));
    // A room version 12 creator has unbounded power and is not listed: give the highest listed level.
    let level = if granted == i64::MAX {
        content["users"].as_object().into_iter().flatten().filter_map(|(_, v)| v.as_i64()).max().unwrap_or(100).max(100)
    } else {
        granted
    };
    content["users"][target.as_str()] = json!(level);
    rooms.append(&room, &granter, NewEvent::state(StateEventType::RoomPowerLevels, "", content), None).await?;
    admin.audit(&services, "room.make_room_admin", room.as_str(), json!({ "user_id": target, "level": level }))?;
    ok(json!({}))
}

/// `GET /_synapse/admin/v1/rooms/{room}/messages`: the room's timeline as the client API pages
/// it (`from`, `to`, `dir`, `limit`), whatever the admin's own membership.
async fn messages(State(services): State<Arc<Services>>, _: Admin, Path(room): Path<String>, params: Params) -> Answer {
    let room = room_id(&room)?;
    if !services.rooms.exists(&room)? {
        return Err(Error::not_found("Room not found").into());
    }
    let limit = params.num("limit")?.map_or(10, |l| l as usize).min(1000);
    // Synapse's default direction is forwards.
    let backwards = params.backwards()?;
    let position = |name: &str| -> Result<Option<u64>, ApiError> {
        params.str(name).map(|t| crate::rooms::read::parse_token(t).map_err(ApiError::from)).transpose()
    };
    let (from, to) = (position("from")?, position("to")?);
    let filter = params
        .str("filter")
        .map(|f| serde_json::from_str::<EventFilter>(f).map_err(|e| Error::invalid_param(format!("filter: {e}"))))
        .transpose()?
        .unwrap_or_default();
    let mut page = services.rooms.messages_as_admin(&room, from, to, backwards, limit)?;
    page.chunk.retain(|event| filter.matches(event));
    ok(json!({ "chunk": page.chunk, "start": page.start, "end": page.end }))
}

/// The parts of a room event filter the admin's message view applies (Ketesa filters by type,
/// sender and whether events carry a URL). Types and senders may end in `*`.
#[derive(Default, Deserialize)]
struct EventFilter {
    types: Option<Vec<String>>,
    #[serde(default)]
    not_types: Vec<String>,
    senders: Option<Vec<String>>,
    #[serde(default)]
    not_senders: Vec<String>,
    contains_url: Option<bool>,
}

impl EventFilter {
    fn matches(&self, event: &Value) -> bool {
        let like = |patterns: &[String], value: &str| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(stem) => value.starts_with(stem),
                None => p == value,
            })
        };
        let kind = event["type"].as_str().unwrap_or("");
        let sender = event["sender"].as_str().unwrap_or("");
        self.types.as_deref().is_none_or(|t| like(t, kind))
            && !like(&self.not_types, kind)
            && self.senders.as_deref().is_none_or(|s| like(s, sender))
            && !like(&self.not_senders, sender)
            && self.contains_url.is_none_or(|wanted| event["content"]["url"].is_string() == wanted)
    }
}

#[derive(Deserialize)]
struct PurgeHistory {
    #[serde(default)]
    delete_local_events: bool,
    purge_up_to_event_id: Option<String>,
    purge_up_to_ts: Option<u64>,
}

/// `POST /_synapse/admin/v1/purge_history/{room_id}[/{event_id}]`: deletes the room's timeline
/// events before the given event (or the first event at or after `purge_up_to_ts`), other
/// servers' only unless `delete_local_events`; state events stay. Answers a `purge_id` for
/// `purge_history_status`.
async fn purge_history(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(room): Path<String>,
    Body(body): Body<PurgeHistory>,
) -> Answer {
    start_purge(services, admin, room, body).await
}

async fn purge_history_to_event(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path((room, event_id)): Path<(String, String)>,
    Body(mut body): Body<PurgeHistory>,
) -> Answer {
    body.purge_up_to_event_id = Some(event_id);
    start_purge(services, admin, room, body).await
}

async fn start_purge(services: Arc<Services>, admin: Admin, room: String, body: PurgeHistory) -> Answer {
    let room = room_id(&room)?;
    if !services.rooms.exists(&room)? {
        return Err(Error::not_found("Room not found").into());
    }
    let before = match (&body.purge_up_to_event_id, body.purge_up_to_ts) {
        (Some(event_id), _) => {
            let event_id = ruma::EventId::parse(event_id.as_str())
                .map_err(|e| ApiError::from(Error::invalid_param(format!("invalid event id: {e}"))))?;
            let meta = services.rooms.meta(&event_id)?.filter(|m| m.room_id == room);
            meta.ok_or_else(|| ApiError::from(Error::invalid_param("that event is not in this room")))?.pos
        }
        (None, Some(ts)) => position_at(&services, &room, ts)?,
        (None, None) => {
            return Err(Error::invalid_param("give purge_up_to_event_id or purge_up_to_ts").into());
        }
    };
    let purge_id = start_history_purge(services, &admin, room, before, body.delete_local_events)?;
    ok(json!({ "purge_id": purge_id }))
}

/// The stream position a purge up to `ts` stops at: that of the first event at or after it.
pub(crate) fn position_at(services: &Services, room: &RoomId, ts: u64) -> Result<u64, ApiError> {
    Ok(match services.rooms.event_at_timestamp_as_admin(room, ts, true)? {
        Some((event_id, _)) => services.rooms.meta(&event_id)?.map_or(u64::MAX, |m| m.pos),
        None => u64::MAX,
    })
}

/// Starts deleting `room`'s timeline events before stream position `before` (other servers'
/// only unless `delete_local`), in the background, and records it; the admin API and the
/// console share it. Answers the purge id `purge_history_status` reads.
pub(crate) fn start_history_purge(
    services: Arc<Services>,
    admin: &Admin,
    room: OwnedRoomId,
    before: u64,
    delete_local: bool,
) -> Result<String, ApiError> {
    let purge_id = crate::users::random_password();
    services.history_purges.lock().expect("purges").insert(purge_id.clone(), json!({ "status": "active" }));
    let details = json!({ "before_position": before, "delete_local_events": delete_local });
    admin.audit(&services, "room.purge_history", room.as_str(), details)?;
    let id = purge_id.clone();
    tokio::spawn(async move {
        let status = match services.rooms.purge_history(&room, before, delete_local).await {
            Ok(deleted) => json!({ "status": "complete", "deleted": deleted }),
            Err(error) => json!({ "status": "failed", "error": error.to_string() }),
        };
        services.history_purges.lock().expect("purges").insert(id, status);
    });
    Ok(purge_id)
}

/// `GET /_synapse/admin/v1/purge_history_status/{purge_id}`: `active`, `complete` or `failed`.
async fn purge_history_status(State(services): State<Arc<Services>>, _: Admin, Path(purge_id): Path<String>) -> Answer {
    let status = services.history_purges.lock().expect("purges").get(&purge_id).cloned();
    ok(status.ok_or_else(|| Error::not_found("purge id not found"))?)
}

/// `GET /_synapse/admin/v1/rooms/{room}/timestamp_to_event?ts=&dir=`: the event closest to
/// `ts` (the last at or before it with `dir=b`, the default; the first at or after with `f`).
async fn timestamp_to_event(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(room): Path<String>,
    params: Params,
) -> Answer {
    let room = room_id(&room)?;
    if !services.rooms.exists(&room)? {
        return Err(Error::not_found("Room not found").into());
    }
    let ts = params.num("ts")?.ok_or_else(|| ApiError::from(Error::invalid_param("ts is required")))?;
    let forward = match params.str("dir") {
        None | Some("b") => false,
        Some("f") => true,
        Some(_) => return Err(Error::invalid_param("dir must be f or b").into()),
    };
    let (event_id, at) = services
        .rooms
        .event_at_timestamp_as_admin(&room, ts, forward)?
        .ok_or_else(|| Error::not_found("no event in that direction from that time"))?;
    ok(json!({ "event_id": event_id, "origin_server_ts": at }))
}

/// `GET /_synapse/admin/v1/rooms/{room}/context/{event_id}?limit=`: the event with up to
/// `limit / 2` events on each side and the room's current state, whatever the admin's membership.
async fn context(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((room, event_id)): Path<(String, String)>,
    params: Params,
) -> Answer {
    let room = room_id(&room)?;
    let event_id =
        ruma::EventId::parse(&event_id).map_err(|e| Error::invalid_param(format!("invalid event id: {e}")))?;
    let rooms = &services.rooms;
    let meta =
        rooms.meta(&event_id)?.filter(|m| m.room_id == room).ok_or_else(|| Error::not_found("Event not found"))?;
    let event = rooms.client_event(&event_id)?.ok_or_else(|| Error::not_found("Event not found"))?;
    let side = (params.num("limit")?.unwrap_or(10).min(1000) as usize).div_ceil(2);
    let before = rooms.messages_as_admin(&room, Some(meta.pos), None, true, side)?;
    let after = rooms.messages_as_admin(&room, Some(meta.pos + 1), None, false, side)?;
    let record = rooms.room(&room)?.ok_or_else(|| Error::not_found("Room not found"))?;
    let mut state = Vec::new();
    for (_, id) in rooms.full_state(record.snapshot)? {
        if let Some(e) = rooms.client_event(&id)? {
            state.push(e);
        }
    }
    ok(json!({
        "event": event,
        "events_before": before.chunk,
        "events_after": after.chunk,
        "start": before.end.unwrap_or(before.start),
        "end": after.end.unwrap_or(after.start),
        "state": state,
    }))
}
