//! Space hierarchies (`GET /rooms/{id}/hierarchy`): a breadth-first walk from a space through its
//! `m.space.child` links, over the rooms this server holds and, for the others, the summaries
//! their servers give through federation `/hierarchy`. A user is shown only the rooms they may
//! preview (members, world-readable, open to joining or knocking, restricted to a room they are
//! in). Pages are offsets into the walk (`from` = `h<n>`), re-walked from the root each time.

use std::collections::{HashMap, HashSet, VecDeque};

use ruma::{api::federation::space::get_hierarchy, OwnedRoomId, OwnedServerName, RoomId, UserId};
use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    rooms::hierarchy::{child_link, sort_children, Previewer, SpaceChild},
    services::Services,
};

/// Rooms a walk visits at most, whatever the pages asked: bounds the work of one request.
const MAX_VISITED: usize = 1000;
/// Depth used when the client sets none.
const DEFAULT_DEPTH: usize = 10;

/// A client's hierarchy request.
pub struct Query {
    pub from: Option<String>,
    pub limit: Option<usize>,
    pub max_depth: Option<usize>,
    pub suggested_only: bool,
}

/// One page: each room's summary with its `children_state`, and the token of the next page.
pub struct Page {
    pub rooms: Vec<Value>,
    pub next_batch: Option<String>,
}

/// What the walk knows of one room.
struct Visit {
    summary: Value,
    children: Vec<SpaceChild>,
}

impl Visit {
    fn chunk(&self) -> Value {
        let mut chunk = self.summary.clone();
        chunk["children_state"] = Value::Array(self.children.iter().map(|c| c.event.clone()).collect());
        chunk
    }
}

/// Walks the hierarchy under `root` for `user` (`None`: a server admin, who sees every room).
/// The root itself must be visible to them (403 otherwise, 404 when no server knows it).
pub async fn hierarchy(services: &Services, user: Option<&UserId>, root: &RoomId, query: Query) -> Result<Page> {
    let skip = match query.from.as_deref() {
        Some(token) => token
            .strip_prefix('h')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid_param("invalid pagination token"))?,
        None => 0,
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 100);
    let max_depth = query.max_depth.unwrap_or(DEFAULT_DEPTH).min(DEFAULT_DEPTH);
    // Summaries other servers gave of the children of rooms they hold.
    let mut known: HashMap<OwnedRoomId, Value> = HashMap::new();
    let mut queue: VecDeque<(OwnedRoomId, Vec<OwnedServerName>, usize)> =
        VecDeque::from([(root.to_owned(), Vec::new(), 0)]);
    let mut seen = HashSet::new();
    let mut rooms = Vec::new();
    let mut index = 0;
    while let Some((room, via, depth)) = queue.pop_front() {
        if !seen.insert(room.clone()) || seen.len() > MAX_VISITED {
            continue;
        }
        let wants_children = depth < max_depth;
        let visit = visit(services, user, &room, &via, wants_children, query.suggested_only, &mut known).await?;
        let Some(visit) = visit else {
            if room == root {
                return Err(Error::forbidden("you may not see this room"));
            }
            continue;
        };
        if index >= skip {
            rooms.push(visit.chunk());
        }
        index += 1;
        if wants_children {
            for child in visit.children {
                queue.push_back((child.room_id, child.via, depth + 1));
            }
        }
        if rooms.len() >= limit {
            let more = queue.iter().any(|(r, _, _)| !seen.contains(r));
            return Ok(Page { rooms, next_batch: more.then(|| format!("h{index}")) });
        }
    }
    Ok(Page { rooms, next_batch: None })
}

/// A room as `user` may see it, or `None` when they may not (or nobody answers for it).
async fn visit(
    services: &Services,
    user: Option<&UserId>,
    room: &RoomId,
    via: &[OwnedServerName],
    wants_children: bool,
    suggested_only: bool,
    known: &mut HashMap<OwnedRoomId, Value>,
) -> Result<Option<Visit>> {
    let rooms = &services.rooms;
    if rooms.exists(room)? {
        if let Some(user) = user {
            if !rooms.may_preview(Previewer::User(user), room)? {
                return Ok(None);
            }
        }
        let children = if wants_children { rooms.space_children(room, suggested_only)? } else { Vec::new() };
        return Ok(Some(Visit { summary: rooms.summary(room)?, children }));
    }
    if !wants_children {
        if let Some(summary) = known.get(room) {
            return Ok(user
                .is_none_or(|u| user_may_see(services, u, summary).unwrap_or(false))
                .then(|| Visit { summary: summary.clone(), children: Vec::new() }));
        }
    }
    let Some(answer) = ask_servers(services, room, via, suggested_only).await else {
        return Ok(None);
    };
    for child in &answer.children {
        if let Ok(summary) = serde_json::to_value(child) {
            known.insert(child.room_id.clone(), summary);
        }
    }
    let summary = serde_json::to_value(&answer.room.summary).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(user) = user {
        if !user_may_see(services, user, &summary)? {
            return Ok(None);
        }
    }
    let mut children: Vec<SpaceChild> = answer
        .room
        .children_state
        .iter()
        .filter_map(|raw| {
            let event: Value = serde_json::from_str(raw.json().get()).ok()?;
            let child = event["state_key"].as_str().and_then(|k| RoomId::parse(k).ok())?;
            child_link(child, &event, suggested_only)
        })
        .filter(|c| !answer.inaccessible_children.contains(&c.room_id))
        .collect();
    sort_children(&mut children);
    if !wants_children {
        children.clear();
    }
    Ok(Some(Visit { summary, children }))
}

/// `GET /room_summary/{roomIdOrAlias}`: what a room says of itself to `user` (anyone when the
/// request is not authenticated), from our copy or else from the servers in `via`, when it may
/// be previewed; with the user's membership. Hidden and unknown rooms alike are 404.
pub async fn room_summary(
    services: &Services,
    user: Option<&UserId>,
    room: &RoomId,
    via: &[OwnedServerName],
) -> Result<(Value, Option<String>)> {
    let hidden = || crate::error::Error::not_found("no such room, or it is not visible to you");
    let membership = match user {
        Some(user) => services.rooms.membership(user, room)?.map(|m| m.membership),
        None => None,
    };
    let held = services.rooms.room(room)?.is_some() && !services.rooms.joined_members(room)?.is_empty();
    let summary = if held {
        let visible = match user {
            Some(user) => services.rooms.may_preview(crate::rooms::hierarchy::Previewer::User(user), room)?,
            None => openly_previewable(&services.rooms.summary(room)?),
        };
        if !visible {
            return Err(hidden());
        }
        services.rooms.summary(room)?
    } else {
        let answer = ask_servers(services, room, via, false).await.ok_or_else(hidden)?;
        let summary = serde_json::to_value(&answer.room.summary)
            .map_err(|e| crate::error::Error::Internal(format!("a room summary: {e}")))?;
        let visible = match user {
            Some(user) => user_may_see(services, user, &summary)?,
            None => openly_previewable(&summary),
        };
        if !visible {
            return Err(hidden());
        }
        summary
    };
    Ok((summary, membership))
}

/// Whether anyone at all may preview the room: world-readable, or open to joining or knocking.
fn openly_previewable(summary: &Value) -> bool {
    let join_rule = summary["join_rule"].as_str().unwrap_or("public");
    summary["world_readable"] == true || matches!(join_rule, "public" | "knock" | "knock_restricted")
}

/// Asks the room's servers for its hierarchy, the first that answers wins.
async fn ask_servers(
    services: &Services,
    room: &RoomId,
    via: &[OwnedServerName],
    suggested_only: bool,
) -> Option<get_hierarchy::v1::Response> {
    let fed = &services.federation;
    let candidates = via.iter().cloned().chain(room.server_name().map(ToOwned::to_owned));
    let mut tried = Vec::new();
    for server in candidates {
        if server == fed.server_name() || tried.contains(&server) || !fed.allowed(&server) {
            continue;
        }
        tried.push(server.clone());
        let mut request = get_hierarchy::v1::Request::new(room.to_owned());
        request.suggested_only = suggested_only;
        match fed.send(&server, request).await {
            Ok(answer) if answer.room.summary.room_id == room => return Some(answer),
            Ok(_) => tracing::info!(%server, %room, "a hierarchy answer for another room"),
            Err(error) => tracing::info!(%server, %room, %error, "no hierarchy from this server"),
        }
    }
    None
}

/// Whether `user` may see a room this server does not hold, from the summary its server gave.
fn user_may_see(services: &Services, user: &UserId, summary: &Value) -> Result<bool> {
    // An absent join rule is `public` (ruma leaves the default out).
    let join_rule = summary["join_rule"].as_str().unwrap_or("public");
    if summary["world_readable"] == true || matches!(join_rule, "public" | "knock" | "knock_restricted") {
        return Ok(true);
    }
    if let Some(room) = summary["room_id"].as_str().and_then(|r| RoomId::parse(r).ok()) {
        if services.rooms.membership(user, &room)?.is_some_and(|m| matches!(m.membership.as_str(), "join" | "invite")) {
            return Ok(true);
        }
    }
    let allowed = summary["allowed_room_ids"].as_array().cloned().unwrap_or_default();
    Ok(join_rule == "restricted"
        && allowed
            .iter()
            .filter_map(|r| r.as_str().and_then(|r| RoomId::parse(r).ok()))
            .any(|r| services.rooms.is_joined(user, &r).unwrap_or(false)))
}

/// The federation `/hierarchy` answer for a room we hold, as `origin`'s users may see it.
pub fn serve(services: &Services, origin: &ruma::ServerName, room: &RoomId, suggested_only: bool) -> Result<Value> {
    let rooms = &services.rooms;
    if !rooms.exists(room)? {
        return Err(Error::not_found("this server does not know the room"));
    }
    if !rooms.may_preview(Previewer::Server(origin), room)?
        || !crate::federation::receive::acl_allows(services, room, origin)
    {
        return Err(Error::forbidden("your server may not see this room"));
    }
    let children = rooms.space_children(room, suggested_only)?;
    let mut summaries = Vec::new();
    let mut inaccessible = Vec::new();
    for child in &children {
        if !rooms.exists(&child.room_id)? {
            continue;
        }
        let acl = crate::federation::receive::acl_allows(services, &child.room_id, origin);
        if acl && rooms.may_preview(Previewer::Server(origin), &child.room_id)? {
            summaries.push(rooms.summary(&child.room_id)?);
        } else {
            inaccessible.push(child.room_id.clone());
        }
    }
    let visit = Visit { summary: rooms.summary(room)?, children };
    Ok(json!({ "room": visit.chunk(), "children": summaries, "inaccessible_children": inaccessible }))
}
