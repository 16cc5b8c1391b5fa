//! Rooms: creation, sending, state, reading, redaction, relations.

use std::sync::Arc;

use ruma::{
    api::client::{
        context::get_context,
        filter::RoomEventFilter,
        message::{get_message_events, send_message_event},
        redact::redact_event,
        relations::{
            get_relating_events, get_relating_events_with_rel_type, get_relating_events_with_rel_type_and_event_type,
        },
        room::{create_room, get_room_event, upgrade_room, Visibility},
        state::{get_state_event_for_key, get_state_events, send_state_event},
    },
    api::Direction,
    events::TimelineEventType,
    serde::Raw,
    UInt,
};
use serde_json::{json, Value};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    rooms::{
        create::{CreateRoom, Preset, CREATABLE_VERSIONS},
        pdu::to_raw,
        read::{parse_any_token, EventFilter, RelationFilter},
        NewEvent, TxnKey,
    },
    services::Services,
};

fn raw_json<T>(raw: &Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::BadJson(e.to_string()))
}

pub fn event_filter(filter: &RoomEventFilter) -> EventFilter {
    EventFilter {
        types: filter.types.clone(),
        not_types: filter.not_types.clone(),
        senders: filter.senders.as_ref().map(|s| s.iter().map(|u| u.to_string()).collect()),
        not_senders: filter.not_senders.iter().map(|u| u.to_string()).collect(),
        lazy_load_members: !filter.lazy_load_options.is_disabled(),
    }
}

/// Clients may create (and upgrade to) the current room versions only.
fn check_creatable(version: Option<&ruma::RoomVersionId>) -> Result<()> {
    match version {
        Some(v) if !CREATABLE_VERSIONS.contains(v) => {
            Err(Error::UnsupportedRoomVersion(format!("this server cannot create rooms of version {v}")))
        }
        _ => Ok(()),
    }
}

fn limit(value: Option<UInt>, default: u64, max: u64) -> usize {
    value.map(u64::from).unwrap_or(default).clamp(1, max) as usize
}

pub async fn create(
    services: Arc<Services>,
    request: Ruma<create_room::v3::Request>,
) -> Result<create_room::v3::Response> {
    let sender = request.sender()?.user_id.clone();
    let acting_for = request.sender()?.appservice.clone();
    let body = request.body;
    if let Some(local) = &body.room_alias_name {
        if let Ok(alias) = ruma::RoomAliasId::parse(format!("#{local}:{}", services.config.server_name)) {
            let holder = services.appservices.exclusive_owner_of_alias(&alias);
            if holder.is_some_and(|h| acting_for.as_deref() != Some(h.registration.id.as_str())) {
                return Err(Error::Exclusive("this alias is reserved by an application service".into()));
            }
        }
    }
    let creation_content = match &body.creation_content {
        Some(raw) => match raw_json(raw)? {
            Value::Object(map) => map,
            _ => return Err(Error::BadJson("creation_content must be an object".into())),
        },
        None => Default::default(),
    };
    let power_level_override = match &body.power_level_content_override {
        Some(raw) => match raw_json(raw)? {
            Value::Object(map) => Some(map),
            _ => return Err(Error::BadJson("power_level_content_override must be an object".into())),
        },
        None => None,
    };
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event = raw_json(raw)?;
        let kind = event["type"].as_str().ok_or_else(|| Error::BadJson("initial_state events need a type".into()))?;
        let key = event.get("state_key").and_then(|k| k.as_str()).unwrap_or("");
        initial_state.push((kind.to_owned(), key.to_owned(), event.get("content").cloned().unwrap_or(json!({}))));
    }
    let preset = body.preset.as_ref().map(|p| match p.as_str() {
        "public_chat" => Ok(Preset::PublicChat),
        "trusted_private_chat" => Ok(Preset::TrustedPrivateChat),
        "private_chat" => Ok(Preset::PrivateChat),
        other => Err(Error::BadJson(format!("unknown preset {other}"))),
    });
    let params = CreateRoom {
        preset: preset.transpose()?,
        public: body.visibility == Visibility::Public,
        name: body.name,
        topic: body.topic,
        alias_localpart: body.room_alias_name,
        invite: body.invite,
        is_direct: body.is_direct,
        initial_state,
        version: body.room_version,
        creation_content,
        power_level_override,
    };
    check_creatable(params.version.as_ref())?;
    let remote: Vec<_> = params.invite.iter().filter(|u| !services.users.is_local(u)).cloned().collect();
    // Validated before the room exists: a server that cannot be reached leaves nothing behind.
    for invitee in &remote {
        services.federation.require_reachable(invitee.server_name()).await?;
    }
    let is_direct = params.is_direct;
    let room = services.rooms.create_room(&sender, params, &services.config.rooms.default_version).await?;
    // The room exists now: a remote server that does not take its invite must not make the client
    // retry (and create a second room), so failures are logged and the room is answered.
    for invitee in &remote {
        if let Err(error) =
            crate::federation::membership::invite_remote(&services, &room, &sender, invitee, None, is_direct).await
        {
            tracing::warn!(%room, %invitee, %error, "createRoom: the remote invite failed");
        }
    }
    Ok(create_room::v3::Response::new(room))
}

pub async fn upgrade(
    services: Arc<Services>,
    request: Ruma<upgrade_room::v3::Request>,
) -> Result<upgrade_room::v3::Response> {
    let sender = request.sender()?.user_id.clone();
    let b = request.body;
    check_creatable(Some(&b.new_version))?;
    let new = services.rooms.upgrade(&b.room_id, &sender, b.new_version, b.additional_creators).await?;
    Ok(upgrade_room::v3::Response::new(new))
}

pub async fn send_message(
    services: Arc<Services>,
    request: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let owner = request.sender()?.clone();
    let body = request.body;
    let txn = TxnKey {
        user: owner.user_id.clone(),
        device: owner.device_id.clone(),
        txn_id: body.txn_id.to_string(),
        scope: format!("send/{}/{}", body.room_id, body.event_type),
    };
    if !services.rooms.exists(&body.room_id)? || !services.rooms.is_joined(&owner.user_id, &body.room_id)? {
        return Err(Error::forbidden("you are not in this room"));
    }
    let event = NewEvent::message(TimelineEventType::from(body.event_type.to_string()), raw_json(&body.body)?);
    if services.users.is_shadow_banned(&owner.user_id)? {
        let seed = format!("{}|{}|{}|{}", txn.user, txn.device, body.room_id, txn.txn_id);
        return Ok(send_message_event::v3::Response::new(services.users.fake_event_id(&seed)));
    }
    let event_id = services.rooms.append(&body.room_id, &owner.user_id, event, Some(txn)).await?;
    Ok(send_message_event::v3::Response::new(event_id))
}

pub async fn send_state(
    services: Arc<Services>,
    request: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let sender = request.sender()?.user_id.clone();
    let body = request.body;
    if !services.rooms.exists(&body.room_id)? {
        return Err(Error::forbidden("you are not in this room"));
    }
    let event = NewEvent::state(body.event_type.clone(), body.state_key.clone(), raw_json(&body.body)?);
    if services.users.is_shadow_banned(&sender)? {
        let seed = format!("{sender}|{}|{}|{}", body.room_id, body.event_type, body.state_key);
        return Ok(send_state_event::v3::Response::new(services.users.fake_event_id(&seed)));
    }
    let event_id = services.rooms.append(&body.room_id, &sender, event, None).await?;
    Ok(send_state_event::v3::Response::new(event_id))
}

pub async fn get_state_event(
    services: Arc<Services>,
    request: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    let state = services.rooms.visible_state(&user, &body.room_id)?;
    let id = state
        .into_iter()
        .find(|((kind, key), _)| *kind == body.event_type && *key == body.state_key)
        .map(|(_, id)| id)
        .ok_or_else(|| Error::not_found("no such state event"))?;
    let event = services.rooms.client_event(&id)?.ok_or_else(|| Error::not_found("no such state event"))?;
    let value = match body.format {
        ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat::Event => event,
        _ => event["content"].clone(),
    };
    let raw = serde_json::value::to_raw_value(&value).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_state_event_for_key::v3::Response::new(raw))
}

pub async fn get_state(
    services: Arc<Services>,
    request: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let mut events = Vec::new();
    for (_, id) in services.rooms.visible_state(&user, &request.body.room_id)? {
        if let Some(e) = services.rooms.client_event(&id)? {
            events.push(to_raw(&e));
        }
    }
    Ok(get_state_events::v3::Response::new(events))
}

pub async fn messages(
    services: Arc<Services>,
    request: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    let from = body.from.as_deref().map(parse_any_token).transpose()?;
    let to = body.to.as_deref().map(parse_any_token).transpose()?;
    let filter = event_filter(&body.filter);
    let limit = limit(Some(body.limit), 10, 1000);
    let limit = body.filter.limit.map(|l| (u64::from(l) as usize).clamp(1, 1000)).unwrap_or(limit);
    let backward = body.dir == Direction::Backward;
    let mut page = services.rooms.messages(&user, &body.room_id, from, to, backward, limit, &filter)?;
    // Paged back past what this server holds: ask the room's other servers for older history.
    if backward && page.end.is_none() && to.is_none() {
        let fetch = crate::federation::backfill::older_history(&services, &body.room_id, limit);
        match tokio::time::timeout(crate::federation::backfill::BACKFILL_WAIT, fetch).await {
            Ok(Ok(stored)) if stored > 0 => {
                page = services.rooms.messages(&user, &body.room_id, from, to, backward, limit, &filter)?;
            }
            Ok(Err(error)) => tracing::info!(room = %body.room_id, %error, "backfill failed"),
            _ => {}
        }
    }
    let mut response = get_message_events::v3::Response::new();
    response.start = page.start;
    response.end = page.end;
    response.chunk = page.chunk.iter().map(to_raw).collect();
    response.state = page.state.iter().map(to_raw).collect();
    Ok(response)
}

pub async fn context(
    services: Arc<Services>,
    request: Ruma<get_context::v3::Request>,
) -> Result<get_context::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    let filter = event_filter(&body.filter);
    // 0 is a valid limit here: the event alone, with tokens either side of it.
    let limit = u64::from(body.limit).min(100) as usize;
    let (event, before, after, state) = services.rooms.context(&user, &body.room_id, &body.event_id, limit, &filter)?;
    let mut response = get_context::v3::Response::new();
    response.event = Some(to_raw(&event));
    response.start = before.end.or(Some(before.start));
    response.end = after.end.or(Some(after.start));
    response.events_before = before.chunk.iter().map(to_raw).collect();
    response.events_after = after.chunk.iter().map(to_raw).collect();
    response.state = state.iter().map(to_raw).collect();
    Ok(response)
}

pub async fn get_event(
    services: Arc<Services>,
    request: Ruma<get_room_event::v3::Request>,
) -> Result<get_room_event::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let event = services.rooms.event_for(&user, &request.body.room_id, &request.body.event_id)?;
    Ok(get_room_event::v3::Response::new(to_raw(&event)))
}

pub async fn redact(
    services: Arc<Services>,
    request: Ruma<redact_event::v3::Request>,
) -> Result<redact_event::v3::Response> {
    let owner = request.sender()?.clone();
    let body = request.body;
    let record = services.rooms.room(&body.room_id)?.ok_or_else(|| Error::forbidden("you are not in this room"))?;
    if !services.rooms.is_joined(&owner.user_id, &body.room_id)? {
        return Err(Error::forbidden("you are not in this room"));
    }
    let event = NewEvent::redaction(&record.version, &body.event_id, body.reason.as_deref());
    let txn = TxnKey {
        user: owner.user_id.clone(),
        device: owner.device_id.clone(),
        txn_id: body.txn_id.to_string(),
        scope: format!("redact/{}/{}", body.room_id, body.event_id),
    };
    let event_id = services.rooms.append(&body.room_id, &owner.user_id, event, Some(txn)).await?;
    Ok(redact_event::v3::Response::new(event_id))
}

fn relations_response(
    chunk: Vec<Value>,
    next: Option<String>,
) -> (Vec<Raw<ruma::events::AnyMessageLikeEvent>>, Option<String>) {
    (chunk.iter().map(to_raw).collect(), next)
}

pub async fn threads(
    services: Arc<Services>,
    request: Ruma<super::endpoints::get_threads::Request>,
) -> Result<super::endpoints::get_threads::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let from = b.from.as_deref().map(parse_any_token).transpose()?;
    let participated = match b.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(other) => return Err(Error::invalid_param(format!("include must be all or participated, not {other}"))),
    };
    let (chunk, next) = services.rooms.threads(&user, &b.room_id, participated, from, limit(b.limit, 50, 100))?;
    Ok(super::endpoints::get_threads::Response { chunk: chunk.iter().map(to_raw).collect(), next_batch: next })
}

pub async fn relations(
    services: Arc<Services>,
    request: Ruma<get_relating_events::v1::Request>,
) -> Result<get_relating_events::v1::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let from = b.from.as_deref().map(parse_any_token).transpose()?;
    let (chunk, next) = services.rooms.relations(
        &user,
        &b.room_id,
        &b.event_id,
        RelationFilter::default(),
        from,
        limit(b.limit, 50, 1000),
    )?;
    let (chunk, next) = relations_response(chunk, next);
    let mut response = get_relating_events::v1::Response::new(chunk);
    response.next_batch = next;
    Ok(response)
}

pub async fn relations_with_type(
    services: Arc<Services>,
    request: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let from = b.from.as_deref().map(parse_any_token).transpose()?;
    let rel = b.rel_type.to_string();
    let (chunk, next) = services.rooms.relations(
        &user,
        &b.room_id,
        &b.event_id,
        RelationFilter { rel_type: Some(&rel), event_type: None },
        from,
        limit(b.limit, 50, 1000),
    )?;
    let (chunk, next) = relations_response(chunk, next);
    let mut response = get_relating_events_with_rel_type::v1::Response::new(chunk);
    response.next_batch = next;
    Ok(response)
}

pub async fn relations_with_type_and_event(
    services: Arc<Services>,
    request: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let from = b.from.as_deref().map(parse_any_token).transpose()?;
    let rel = b.rel_type.to_string();
    let kind = b.event_type.to_string();
    let (chunk, next) = services.rooms.relations(
        &user,
        &b.room_id,
        &b.event_id,
        RelationFilter { rel_type: Some(&rel), event_type: Some(&kind) },
        from,
        limit(b.limit, 50, 1000),
    )?;
    let (chunk, next) = relations_response(chunk, next);
    let mut response = get_relating_events_with_rel_type_and_event_type::v1::Response::new(chunk);
    response.next_batch = next;
    Ok(response)
}

/// `GET /rooms/{roomId}/timestamp_to_event` (jump to a date).
pub async fn timestamp_to_event(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::room::get_event_by_timestamp::v1::Request>,
) -> Result<ruma::api::client::room::get_event_by_timestamp::v1::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let forward = b.dir == Direction::Forward;
    let found = services.rooms.event_at_timestamp(&user, &b.room_id, u64::from(b.ts.0), forward)?;
    let (event_id, ts) = found.ok_or_else(|| Error::not_found("no event in that direction from that time"))?;
    Ok(ruma::api::client::room::get_event_by_timestamp::v1::Response::new(
        event_id,
        ruma::MilliSecondsSinceUnixEpoch(UInt::new_saturating(ts)),
    ))
}

/// `POST /rooms/{roomId}/report/{eventId}`: an event the reporter may see (404 otherwise, so
/// nobody learns of events they cannot read).
pub async fn report_event(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::room::report_content::v3::Request>,
) -> Result<ruma::api::client::room::report_content::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let unseen = || Error::not_found("no such event, or you may not see it");
    services.rooms.event_for(&user, &b.room_id, &b.event_id).map_err(|_| unseen())?;
    let subject = crate::reports::Subject::Event { room_id: b.room_id, event_id: b.event_id };
    services.reports.file(&user, subject, b.reason)?;
    Ok(ruma::api::client::room::report_content::v3::Response::new())
}

/// `POST /rooms/{roomId}/report`: a room this server knows.
pub async fn report_room(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::room::report_room::v3::Request>,
) -> Result<ruma::api::client::room::report_room::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    if !services.rooms.exists(&b.room_id)? {
        return Err(Error::not_found("this server does not know the room"));
    }
    services.reports.file(&user, crate::reports::Subject::Room { room_id: b.room_id }, Some(b.reason))?;
    Ok(ruma::api::client::room::report_room::v3::Response::new())
}
