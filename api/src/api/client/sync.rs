//! `GET /v3/sync`.

use std::{sync::Arc, time::Duration};

use ruma::{
    api::client::{
        filter::FilterDefinition,
        sync::sync_events::{
            self,
            v3::{
                Filter, GlobalAccountData, InviteState, InvitedRoom, JoinedRoom, KnockState, KnockedRoom, LeftRoom,
                RoomAccountData, State, StateEvents, Timeline,
            },
        },
    },
    OneTimeKeyAlgorithm, UInt,
};

use crate::{
    api::{client::rooms::event_filter, ruma::Ruma},
    error::{Error, Result},
    rooms::{pdu::to_raw, read::EventFilter},
    services::Services,
    sync::{side_by_side, sync, RoomSync, SyncFilter, SyncParams, SyncToken},
};

/// Long-polls are capped so a misbehaving client cannot hold a request for hours.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

fn filter_of(services: &Services, user: &ruma::UserId, filter: Option<&Filter>) -> Result<SyncFilter> {
    let definition = match filter {
        None => return Ok(SyncFilter::default()),
        Some(Filter::FilterDefinition(d)) => d.clone(),
        Some(Filter::FilterId(id)) => {
            let stored = services.filters.get(user, id)?.ok_or_else(|| Error::not_found("unknown filter id"))?;
            serde_json::from_value::<FilterDefinition>(stored).map_err(|e| Error::Internal(e.to_string()))?
        }
        Some(_) => return Ok(SyncFilter::default()),
    };
    let room = &definition.room;
    let plain = |f: &ruma::api::client::filter::Filter| EventFilter {
        types: f.types.clone(),
        not_types: f.not_types.clone(),
        senders: f.senders.as_ref().map(|s| s.iter().map(|u| u.to_string()).collect()),
        not_senders: f.not_senders.iter().map(|u| u.to_string()).collect(),
        lazy_load_members: false,
    };
    Ok(SyncFilter {
        timeline_limit: room.timeline.limit.map(|l| u64::from(l).clamp(1, 1000) as usize).unwrap_or(10),
        timeline: event_filter(&room.timeline),
        state: event_filter(&room.state),
        ephemeral: event_filter(&room.ephemeral),
        room_account_data: event_filter(&room.account_data),
        account_data: plain(&definition.account_data),
        presence: plain(&definition.presence),
        rooms: room.rooms.clone(),
        not_rooms: room.not_rooms.clone(),
        lazy_load_members: !room.state.lazy_load_options.is_disabled(),
        include_leave: room.include_leave,
        state_after: false,
        unread_thread_notifications: room.timeline.unread_thread_notifications,
    })
}

fn timeline(data: &RoomSync) -> Timeline {
    let mut t = Timeline::new();
    t.limited = data.limited;
    t.prev_batch = data.prev_batch.clone();
    t.events = data.timeline.iter().map(to_raw).collect();
    t
}

fn room_account_data(data: &RoomSync) -> RoomAccountData {
    let mut a = RoomAccountData::new();
    a.events = data.account_data.iter().map(to_raw).collect();
    a
}

/// Registers `/sync`: served through [`knock_safe`] rather than as a plain ruma handler.
pub fn route(mut router: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    use axum::{extract::State, response::IntoResponse};
    use ruma::api::{path_builder::PathBuilder, Metadata};
    let handler = |State(services): State<Arc<Services>>, request: Ruma<sync_events::v3::Request>| async move {
        match sync_events(services, request).await {
            Ok(response) => knock_safe(response),
            Err(error) => crate::api::error::ApiError::from(error).into_response(),
        }
    };
    for path in sync_events::v3::Request::PATH_BUILDER.all_paths() {
        router = router.route(path, axum::routing::get(handler));
    }
    router
}

/// ruma 0.16 leaves `rooms` out of a response whose only news is a knock (its `Rooms::is_empty`
/// forgets `knock`), so a knocker would never see their knock; that one case is patched here.
fn knock_safe(response: sync_events::v3::Response) -> axum::response::Response {
    use axum::response::IntoResponse;
    use ruma::api::OutgoingResponse;
    if response.rooms.knock.is_empty() || !response.rooms.is_empty() {
        return crate::api::ruma::RumaResponse(response).into_response();
    }
    let knocks = serde_json::to_value(&response.rooms.knock);
    let patched = response.try_into_http_response::<Vec<u8>>().ok().and_then(|http| {
        let mut value: serde_json::Value = serde_json::from_slice(http.body()).ok()?;
        value["rooms"] = serde_json::json!({ "knock": knocks.ok()? });
        Some(value)
    });
    match patched {
        Some(value) => axum::Json(value).into_response(),
        None => crate::api::error::ApiError::from(Error::Internal("sync response serialization failed".into()))
            .into_response(),
    }
}

/// `state` or, when the client asked with `use_state_after`, `state_after`.
fn state_section(after: bool, data: &RoomSync) -> State {
    let events = StateEvents::with_events(data.state.iter().map(to_raw).collect());
    if after {
        State::After(events)
    } else {
        State::Before(events)
    }
}

/// A joined room's section of the response.
fn joined_room(state_after: bool, data: &RoomSync) -> JoinedRoom {
    let mut joined = JoinedRoom::new();
    joined.timeline = timeline(data);
    joined.state = state_section(state_after, data);
    joined.account_data = room_account_data(data);
    joined.ephemeral.events = data.ephemeral.iter().map(to_raw).collect();
    joined.unread_notifications.notification_count = UInt::new(data.notification_count);
    joined.unread_notifications.highlight_count = UInt::new(data.highlight_count);
    for (root, notify, highlight) in &data.thread_counts {
        let Ok(root) = ruma::OwnedEventId::try_from(root.as_str()) else { continue };
        let mut counts = ruma::api::client::sync::sync_events::UnreadNotificationsCount::new();
        counts.notification_count = UInt::new(*notify);
        counts.highlight_count = UInt::new(*highlight);
        joined.unread_thread_notifications.insert(root, counts);
    }
    if let Some(summary) = &data.summary {
        joined.summary.heroes = summary.heroes.clone();
        joined.summary.joined_member_count = UInt::new(summary.joined_count);
        joined.summary.invited_member_count = UInt::new(summary.invited_count);
    }
    joined
}

pub async fn sync_events(
    services: Arc<Services>,
    request: Ruma<sync_events::v3::Request>,
) -> Result<sync_events::v3::Response> {
    let owner = request.sender()?.clone();
    let user = owner.user_id;
    let body = request.body;
    let state_after = body.use_state_after;
    let params = SyncParams {
        device: owner.device_id,
        set_presence: match body.set_presence.as_str() {
            "online" | "unavailable" | "offline" => Some(body.set_presence.as_str().to_owned()),
            _ => None,
        },
        since: body.since.as_deref().map(SyncToken::parse).transpose()?,
        timeout: body.timeout.unwrap_or_default().min(MAX_TIMEOUT),
        full_state: body.full_state,
        filter: SyncFilter { state_after, ..filter_of(&services, &user, body.filter.as_ref())? },
        user,
    };
    let result = sync(&services, params).await?;

    let mut response = sync_events::v3::Response::new(result.next_batch);
    // Every event of every room becomes JSON text here: side by side when the rooms are many.
    let joined =
        side_by_side(result.join.iter().collect(), |(room, data)| Ok((room.clone(), joined_room(state_after, data))))?;
    response.rooms.join = joined.into_iter().collect();
    for (room, data) in &result.leave {
        let mut left = LeftRoom::new();
        left.timeline = timeline(data);
        left.state = state_section(state_after, data);
        response.rooms.leave.insert(room.clone(), left);
    }
    for (room, events) in &result.invite {
        let state = InviteState::from(events.iter().map(to_raw).collect::<Vec<_>>());
        response.rooms.invite.insert(room.clone(), InvitedRoom::from(state));
    }
    for (room, events) in &result.knock {
        let mut state = KnockState::new();
        state.events = events.iter().map(to_raw).collect();
        response.rooms.knock.insert(room.clone(), KnockedRoom::from(state));
    }
    let mut account_data = GlobalAccountData::new();
    account_data.events = result.account_data.iter().map(to_raw).collect();
    response.account_data = account_data;
    response.to_device.events = result.to_device.iter().map(to_raw).collect();
    response.presence.events = result.presence.iter().map(to_raw).collect();
    response.device_lists.changed = result.device_lists.changed;
    response.device_lists.left = result.device_lists.left;
    response.device_one_time_keys_count = result
        .one_time_key_counts
        .into_iter()
        .map(|(alg, n)| (OneTimeKeyAlgorithm::from(alg.as_str()), UInt::new(n).unwrap_or(UInt::MAX)))
        .collect();
    response.device_unused_fallback_key_types =
        Some(result.unused_fallback_key_types.iter().map(|alg| OneTimeKeyAlgorithm::from(alg.as_str())).collect());
    Ok(response)
}
