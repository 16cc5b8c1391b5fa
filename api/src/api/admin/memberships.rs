//! A user's memberships, joining a user to a room, reading one event, and the background tasks
//! (room shutdowns) — the calls Ketesa makes beyond synapse-admin's.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use ruma::{EventId, OwnedRoomId, RoomAliasId, RoomId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{ok, Admin, Answer, Body, Params};
use crate::{api::error::ApiError, db::codec::prefix, db::codec::Json, error::Error, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/users/{user_id}/memberships", get(memberships))
        .route("/_synapse/admin/v1/join/{room_id_or_alias}", post(join))
        .route("/_synapse/admin/v1/fetch_event/{event_id}", get(fetch_event))
        .route("/_synapse/admin/v1/scheduled_tasks", get(scheduled_tasks))
        .route("/_synapse/admin/v1/rooms/{room_id}/hierarchy", get(hierarchy))
        .route("/_synapse/admin/v1/users/{user_id}/sent_invite_count", get(sent_invite_count))
        .route("/_synapse/admin/v1/users/{user_id}/cumulative_joined_room_count", get(cumulative_joined_room_count))
        .route("/_synapse/admin/v1/statistics/database/rooms", get(room_sizes))
        .route("/_synapse/admin/v1/experimental_features/{user_id}", get(features).put(set_features))
        .route("/_synapse/admin/v1/user/{user_id}/redact", post(redact_user))
        .route("/_synapse/admin/v1/user/redact_status/{redact_id}", get(redact_status))
}

/// Synapse's per-user experimental features and whether Hemicycle serves them: here they are
/// the same for every account (sliding sync and `use_state_after` always on, MSC3881's remote
/// push toggles not implemented).
const FEATURES: [(&str, bool); 3] = [("msc3881", false), ("msc3575", true), ("msc4222", true)];

/// `GET /_synapse/admin/v1/experimental_features/{user_id}`: `{ features: { msc…: bool } }`.
async fn features(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    super::existing_user(&services, &user)?;
    let features: Map<String, Value> = FEATURES.iter().map(|(name, on)| (name.to_string(), json!(on))).collect();
    ok(json!({ "features": features }))
}

#[derive(Deserialize)]
struct SetFeatures {
    features: std::collections::BTreeMap<String, bool>,
}

/// `PUT /_synapse/admin/v1/experimental_features/{user_id}` `{ features }`: accepted when it
/// asks for what every account has already; a change is refused (400), since a feature cannot be
/// turned on or off for one account here.
async fn set_features(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(user): Path<String>,
    Body(body): Body<SetFeatures>,
) -> Answer {
    super::existing_user(&services, &user)?;
    for (name, wanted) in &body.features {
        match FEATURES.iter().find(|(known, _)| known == name) {
            None => return Err(Error::invalid_param(format!("unknown experimental feature {name}")).into()),
            Some((_, on)) if on != wanted => {
                let state = if *on { "on" } else { "off" };
                return Err(Error::invalid_param(format!("{name} is {state} for every account on this server")).into());
            }
            Some(_) => {}
        }
    }
    ok(json!({}))
}

/// `GET /_synapse/admin/v1/statistics/database/rooms`: the rooms that take the most room in
/// the store, by the bytes of their events (`estimated_size`), largest first, at most 10 as in
/// Synapse. It reads every stored event once: an admin's occasional question, not a dashboard's.
async fn room_sizes(State(services): State<Arc<Services>>, _: Admin) -> Answer {
    let reading = services.clone();
    let sizes = tokio::task::spawn_blocking(move || -> Result<Vec<(OwnedRoomId, u64)>, Error> {
        let mut sizes: std::collections::HashMap<OwnedRoomId, u64> = std::collections::HashMap::new();
        for entry in reading.db.tables.rooms.roomidpos_eventid.iter() {
            let ((room, _), event_id) = entry?;
            let bytes = reading.rooms.pdu_json(&event_id)?.map_or(0, |json| json.len() as u64);
            *sizes.entry(room).or_default() += bytes;
        }
        let mut sizes: Vec<(OwnedRoomId, u64)> = sizes.into_iter().collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sizes.truncate(10);
        Ok(sizes)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    let rooms: Vec<Value> =
        sizes.into_iter().map(|(room, size)| json!({ "room_id": room, "estimated_size": size })).collect();
    ok(json!({ "rooms": rooms }))
}

/// The rooms a local user has a membership in (joined, invited, left, banned; not forgotten).
fn rooms_of(services: &Services, user: &ruma::UserId) -> Result<Vec<OwnedRoomId>, ApiError> {
    let entries = services.db.tables.rooms.useridroomid_membership.scan_prefix(prefix(&user.to_owned()));
    Ok(entries.map(|entry| entry.map(|((_, room), _)| room).map_err(Error::from)).collect::<Result<Vec<_>, _>>()?)
}

/// The membership event at a stream position, when it was sent at or after `from_ts`.
fn membership_since(services: &Services, pos: u64, from_ts: u64) -> Option<crate::rooms::pdu::Pdu> {
    let event_id = services.db.tables.rooms.pos_eventid.get(&crate::db::codec::Be64(pos)).ok()??;
    services.rooms.pdu(&event_id).ok()?.filter(|p| u64::from(p.origin_server_ts.0) >= from_ts)
}

fn from_ts(params: &Params) -> Result<u64, ApiError> {
    params.num("from_ts")?.ok_or_else(|| Error::MissingParam("from_ts is required".into()).into())
}

/// `GET /_synapse/admin/v1/users/{user_id}/sent_invite_count?from_ts=`: invites the user sent
/// since then, in the rooms they have a membership in; `{ invite_count }`.
async fn sent_invite_count(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(user): Path<String>,
    params: Params,
) -> Answer {
    let (user, _) = super::existing_user(&services, &user)?;
    let since = from_ts(&params)?;
    let mut count = 0;
    for room in rooms_of(&services, &user)? {
        for entry in services.db.tables.rooms.roomiduserpos_membership.scan_prefix(prefix(&room)) {
            let ((_, target, crate::db::codec::Be64(pos)), membership) = entry.map_err(Error::from)?;
            if membership == "invite" && target != user {
                count += membership_since(&services, pos, since).is_some_and(|p| p.sender == user) as u64;
            }
        }
    }
    ok(json!({ "invite_count": count }))
}

/// `GET /_synapse/admin/v1/users/{user_id}/cumulative_joined_room_count?from_ts=`: rooms the
/// user joined since then (each counted once, left or not); `{ cumulative_joined_room_count }`.
async fn cumulative_joined_room_count(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(user): Path<String>,
    params: Params,
) -> Answer {
    let (user, _) = super::existing_user(&services, &user)?;
    let since = from_ts(&params)?;
    let mut count = 0;
    for room in rooms_of(&services, &user)? {
        let joined = services
            .db
            .tables
            .rooms
            .roomiduserpos_membership
            .scan_prefix(crate::db::codec::prefix2(&room, &user))
            .filter_map(Result::ok)
            .any(|((_, _, crate::db::codec::Be64(pos)), membership)| {
                membership == "join" && membership_since(&services, pos, since).is_some()
            });
        count += joined as u64;
    }
    ok(json!({ "cumulative_joined_room_count": count }))
}

#[derive(Deserialize)]
struct RedactUser {
    /// Rooms to clean; empty: every room the user has a membership in.
    #[serde(default)]
    rooms: Vec<ruma::OwnedRoomId>,
    reason: Option<String>,
}

/// `POST /_synapse/admin/v1/user/{user_id}/redact` `{ rooms, reason }`: redacts, as the admin,
/// every message-like event the user sent in those rooms (state events stay); answers a
/// `redact_id` for `redact_status`. The admin needs the power to redact in each room: events it
/// cannot redact are listed in `failed_redactions` with the reason.
async fn redact_user(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<RedactUser>,
) -> Answer {
    let user = ruma::UserId::parse(user.as_str()).map_err(|e| Error::invalid_param(format!("invalid user id: {e}")))?;
    let rooms = match body.rooms.is_empty() {
        false => body.rooms,
        true => rooms_of(&services, &user)?,
    };
    let redact_id = crate::users::random_password();
    services
        .user_redactions
        .lock()
        .expect("redactions")
        .insert(redact_id.clone(), json!({ "status": "active", "failed_redactions": {} }));
    admin.audit(&services, "user.redact", user.as_str(), json!({ "rooms": rooms }))?;
    let id = redact_id.clone();
    let by = admin.0.user_id.clone();
    tokio::spawn(async move {
        let mut failed = Map::new();
        for room in &rooms {
            let Ok(Some(record)) = services.rooms.room(room) else { continue };
            let events: Vec<ruma::OwnedEventId> = services
                .db
                .tables
                .rooms
                .roomidpos_eventid
                .scan_prefix(prefix(room))
                .filter_map(Result::ok)
                .map(|(_, event_id)| event_id)
                .collect();
            for event_id in events {
                let Ok(Some(pdu)) = services.rooms.pdu(&event_id) else { continue };
                let redacted =
                    services.rooms.meta(&event_id).ok().flatten().is_some_and(|m| m.redacted_because.is_some());
                if pdu.sender != user || pdu.is_state() || pdu.redacted_event().is_some() || redacted {
                    continue;
                }
                let redaction = crate::rooms::NewEvent::redaction(&record.version, &event_id, body.reason.as_deref());
                if let Err(error) = services.rooms.append(room, &by, redaction, None).await {
                    failed.insert(event_id.to_string(), json!(error.to_string()));
                }
            }
        }
        let status = json!({ "status": "complete", "failed_redactions": failed });
        services.user_redactions.lock().expect("redactions").insert(id, status);
    });
    ok(json!({ "redact_id": redact_id }))
}

/// `GET /_synapse/admin/v1/user/redact_status/{redact_id}`: `{ status, failed_redactions }`.
async fn redact_status(State(services): State<Arc<Services>>, _: Admin, Path(redact_id): Path<String>) -> Answer {
    let status = services.user_redactions.lock().expect("redactions").get(&redact_id).cloned();
    ok(status.ok_or_else(|| Error::not_found("redact id not found"))?)
}

/// `GET /_synapse/admin/v1/rooms/{room_id}/hierarchy?from=&limit=&max_depth=`: the space's
/// rooms as the client API's hierarchy gives them, whatever the admin's membership;
/// `{ rooms, next_batch }`.
async fn hierarchy(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(room): Path<String>,
    params: Params,
) -> Answer {
    let room = RoomId::parse(&room).map_err(|e| Error::invalid_param(format!("invalid room id: {e}")))?;
    let query = crate::spaces::Query {
        from: params.str("from").map(str::to_owned),
        limit: params.num("limit")?.map(|l| l as usize),
        max_depth: params.num("max_depth")?.map(|d| d as usize),
        suggested_only: false,
    };
    let page = crate::spaces::hierarchy(&services, None, &room, query).await?;
    let mut body = json!({ "rooms": page.rooms });
    if let Some(next) = page.next_batch {
        body["next_batch"] = json!(next);
    }
    ok(body)
}

/// `GET /_synapse/admin/v1/users/{user_id}/memberships`: `{ memberships: { room: membership } }`
/// for every room the local user has a membership in (joined, invited, left, banned, knocked).
async fn memberships(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let (user, _) = super::existing_user(&services, &user)?;
    let mut out = Map::new();
    for entry in services.db.tables.rooms.useridroomid_membership.scan_prefix(prefix(&user)) {
        let ((_, room), Json(membership)) = entry.map_err(Error::from)?;
        out.insert(room.to_string(), json!(membership.membership));
    }
    ok(json!({ "memberships": out }))
}

#[derive(Deserialize)]
struct JoinBody {
    user_id: String,
}

/// `POST /_synapse/admin/v1/join/{room_id_or_alias}` `{ user_id }`: joins a local user to a
/// room. When the room's rules do not let them in and the admin is joined with the power to
/// invite, the admin invites them first (as Synapse does).
async fn join(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(target): Path<String>,
    Body(body): Body<JoinBody>,
) -> Answer {
    let (user, _) = super::existing_user(&services, &body.user_id)?;
    let (room, via) = resolve(&services, &target).await?;
    let first = crate::federation::membership::join(&services, &room, &user, &via, None).await;
    match first {
        Ok(_) => {}
        Err(Error::Forbidden(_))
            if services.rooms.membership(&admin.0.user_id, &room)?.is_some_and(|m| m.membership == "join") =>
        {
            services
                .rooms
                .set_membership(&room, &admin.0.user_id, &user, "invite", None, serde_json::Map::new())
                .await?;
            crate::federation::membership::join(&services, &room, &user, &via, None).await?;
        }
        Err(other) => return Err(other.into()),
    }
    admin.audit(&services, "room.join_user", room.as_str(), json!({ "user_id": user }))?;
    ok(json!({ "room_id": room }))
}

async fn resolve(
    services: &Arc<Services>,
    target: &str,
) -> Result<(OwnedRoomId, Vec<ruma::OwnedServerName>), ApiError> {
    if target.starts_with('#') {
        let alias =
            <&RoomAliasId>::try_from(target).map_err(|e| Error::invalid_param(format!("invalid room alias: {e}")))?;
        return Ok(crate::federation::membership::resolve_alias(services, alias).await?);
    }
    let room = RoomId::parse(target).map_err(|e| Error::invalid_param(format!("invalid room id or alias: {e}")))?;
    Ok((room, Vec::new()))
}

/// `GET /_synapse/admin/v1/fetch_event/{event_id}`: `{ event }` as stored, whoever may see it.
async fn fetch_event(State(services): State<Arc<Services>>, _: Admin, Path(event_id): Path<String>) -> Answer {
    let event_id = EventId::parse(&event_id).map_err(|e| Error::invalid_param(format!("invalid event id: {e}")))?;
    let event = services.rooms.client_event(&event_id)?.ok_or_else(|| Error::not_found("Event not found"))?;
    ok(json!({ "event": event }))
}

/// `GET /_synapse/admin/v1/scheduled_tasks`: the room shutdowns started through the admin API
/// (Synapse's `shutdown_and_purge_room` tasks), filtered by `action_name`, `resource_id`,
/// `status` (`active`, `complete`, `failed`) and `max_timestamp`.
async fn scheduled_tasks(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Answer {
    let action = params.str("action_name");
    let resource = params.str("resource_id");
    let status = params.str("status");
    let max_timestamp = params.num("max_timestamp")?;
    let deletions: Vec<(String, OwnedRoomId, Value)> = services
        .room_deletions
        .lock()
        .expect("deletions")
        .iter()
        .map(|(id, (room, state))| (id.clone(), room.clone(), state.clone()))
        .collect();
    let mut tasks = Vec::new();
    for (id, room, state) in deletions {
        let task_status = match state["status"].as_str() {
            Some("complete") => "complete",
            Some("failed") => "failed",
            _ => "active",
        };
        let timestamp = state["started_ts"].as_u64().unwrap_or(0);
        let keep = action.is_none_or(|a| a == "shutdown_and_purge_room")
            && resource.is_none_or(|r| r == room.as_str())
            && status.is_none_or(|s| s == task_status)
            && max_timestamp.is_none_or(|max| timestamp <= max);
        if keep {
            tasks.push(json!({
                "id": id,
                "action": "shutdown_and_purge_room",
                "status": task_status,
                "timestamp_ms": timestamp,
                "resource_id": room,
                "result": state.get("shutdown_room"),
                "error": state.get("error"),
            }));
        }
    }
    tasks.sort_by_key(|t| t["timestamp_ms"].as_u64());
    ok(json!({ "scheduled_tasks": tasks }))
}
