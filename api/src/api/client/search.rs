//! `POST /search`: room events by full text, in the rooms the user is joined to.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use ruma::{
    api::client::search::search_events::v3::{
        EventContextResult, GroupingKey, OrderBy, ResultGroup, SearchKeys, SearchResult, UserProfile,
    },
    OwnedRoomId, OwnedUserId, UInt,
};
use serde_json::Value;

use super::{
    endpoints::search_events::{Request, Response, ResultCategories, RoomEvents},
    rooms::event_filter,
};
use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    rooms::pdu::to_raw,
    search::{self, Ordering, SearchQuery},
    services::Services,
};

/// Results per page when the filter gives no limit, and the most a page holds.
const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 50;
/// The most context events on each side of a result.
const MAX_CONTEXT: u64 = 20;

pub async fn search(services: Arc<Services>, request: Ruma<Request>) -> Result<Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Response { search_categories: ResultCategories::default() });
    };
    let keys = match &criteria.keys {
        None => search::KEYS.iter().map(|(k, _)| *k).collect(),
        Some(keys) => keys
            .iter()
            .map(|k| match k {
                SearchKeys::ContentBody => Ok("content.body"),
                SearchKeys::ContentName => Ok("content.name"),
                SearchKeys::ContentTopic => Ok("content.topic"),
                other => Err(Error::invalid_param(format!("cannot search the key {}", other.as_str()))),
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let filter = &criteria.filter;
    let joined = search::searchable_rooms(&services, &user)?;
    let rooms: Vec<OwnedRoomId> = joined
        .into_iter()
        .filter(|r| filter.rooms.as_ref().is_none_or(|wanted| wanted.contains(r)) && !filter.not_rooms.contains(r))
        .collect();
    let order = match criteria.order_by {
        None | Some(OrderBy::Rank) => Ordering::Rank,
        Some(OrderBy::Recent) => Ordering::Recent,
        Some(other) => return Err(Error::invalid_param(format!("cannot order by {}", other.as_str()))),
    };
    let query = SearchQuery {
        term: criteria.search_term.clone(),
        keys,
        rooms,
        senders: filter.senders.as_ref().map(|s| s.iter().map(|u| u.to_string()).collect()),
        not_senders: filter.not_senders.iter().map(|u| u.to_string()).collect(),
        order,
        limit: filter.limit.map(u64::from).unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as usize,
        next_batch: body.next_batch.clone(),
    };
    let events = event_filter(filter);
    let contains_url = filter.url_filter.map(|f| f == ruma::api::client::filter::UrlFilter::EventsWithUrl);
    let head = *services.rooms.subscribe().borrow();
    let backfilled = *services.rooms.subscribe_backfilled().borrow();
    services.search.caught_up(head, backfilled).await;
    let worker = services.clone();
    let results = tokio::task::spawn_blocking(move || {
        worker
            .search
            .search(&worker, &user, &query, &|event: &Value| {
                events.accepts(event) && contains_url.is_none_or(|want| event["content"]["url"].is_string() == want)
            })
            .map(|r| (r, user))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?;
    let (results, user) = results?;

    let context = &criteria.event_context;
    let before = u64::from(context.before_limit).min(MAX_CONTEXT) as usize;
    let after = u64::from(context.after_limit).min(MAX_CONTEXT) as usize;
    let mut out = RoomEvents { count: UInt::new(results.count).unwrap_or(UInt::MAX), ..Default::default() };
    out.highlights = results.highlights;
    out.next_batch = results.next_batch;
    let mut by_room: BTreeMap<String, ResultGroup> = BTreeMap::new();
    let mut by_sender: BTreeMap<String, ResultGroup> = BTreeMap::new();
    let mut rooms_seen = BTreeSet::new();
    for (order, hit) in results.hits.iter().enumerate() {
        let mut context_result = EventContextResult::new();
        if before > 0 || after > 0 || context.include_profile {
            let around = services.rooms.around(&user, &hit.room_id, hit.pos, before, after)?;
            let (events_before, events_after) = (around.before, around.after);
            if context.include_profile {
                let senders: BTreeSet<&str> = std::iter::once(&hit.event)
                    .chain(&events_before)
                    .chain(&events_after)
                    .filter_map(|e| e["sender"].as_str())
                    .collect();
                for sender in senders {
                    let Ok(sender_id) = OwnedUserId::try_from(sender) else { continue };
                    let (name, avatar) = search::profile_in_room(&services, &hit.room_id, sender)?;
                    let mut profile = UserProfile::new();
                    profile.displayname = name;
                    profile.avatar_url = avatar.map(Into::into);
                    context_result.profile_info.insert(sender_id, profile);
                }
            }
            context_result.events_before = events_before.iter().map(to_raw).collect();
            context_result.events_after = events_after.iter().map(to_raw).collect();
            context_result.start = Some(around.start);
            context_result.end = Some(around.end);
        }
        let mut result = SearchResult::new();
        result.rank = Some(hit.rank);
        result.result = Some(to_raw(&hit.event));
        result.context = context_result;
        out.results.push(result);
        let event_id = hit.event["event_id"].as_str().and_then(|e| e.try_into().ok());
        for grouping in &criteria.groupings.group_by {
            let Some(event_id) = event_id.clone() else { continue };
            let group = match grouping.key {
                Some(GroupingKey::RoomId) => by_room.entry(hit.room_id.to_string()).or_default(),
                Some(GroupingKey::Sender) => match hit.event["sender"].as_str() {
                    Some(sender) => by_sender.entry(sender.to_owned()).or_default(),
                    None => continue,
                },
                _ => continue,
            };
            if group.results.is_empty() {
                group.order = UInt::new(order as u64 + 1);
            }
            group.results.push(event_id);
        }
        rooms_seen.insert(hit.room_id.clone());
    }
    if !by_room.is_empty() {
        out.groups.insert("room_id".to_owned(), by_room);
    }
    if !by_sender.is_empty() {
        out.groups.insert("sender".to_owned(), by_sender);
    }
    if criteria.include_state == Some(true) {
        for room in rooms_seen {
            let mut events = Vec::new();
            for (_, id) in services.rooms.visible_state(&user, &room)? {
                if let Some(event) = services.rooms.client_event(&id)? {
                    events.push(to_raw(&event));
                }
            }
            out.state.insert(room, events);
        }
    }
    Ok(Response { search_categories: ResultCategories { room_events: Some(out) } })
}
