//! `GET /rooms/{roomId}/hierarchy`: the rooms of a space, for Element's space view.

use std::sync::Arc;

use ruma::api::client::space::{get_hierarchy, SpaceHierarchyRoomsChunk};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    services::Services,
    spaces::{hierarchy, Query},
};

pub async fn get(
    services: Arc<Services>,
    request: Ruma<get_hierarchy::v1::Request>,
) -> Result<get_hierarchy::v1::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let small = |v: Option<ruma::UInt>| v.map(|n| usize::try_from(u64::from(n)).unwrap_or(usize::MAX));
    let query =
        Query { from: b.from, limit: small(b.limit), max_depth: small(b.max_depth), suggested_only: b.suggested_only };
    let page = hierarchy(&services, Some(&user), &b.room_id, query).await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.next_batch = page.next_batch;
    for chunk in page.rooms {
        let chunk: SpaceHierarchyRoomsChunk =
            serde_json::from_value(chunk).map_err(|e| Error::Internal(format!("a room summary: {e}")))?;
        response.rooms.push(chunk);
    }
    Ok(response)
}

/// `GET /room_summary/{roomIdOrAlias}` (MSC3266): a room's preview for one not in it.
pub async fn summary(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::room::get_summary::v1::Request>,
) -> Result<ruma::api::client::room::get_summary::v1::Response> {
    let user = request.owner.as_ref().map(|o| o.user_id.clone());
    let b = request.body;
    let target: &ruma::RoomOrAliasId = &b.room_id_or_alias;
    let (room, mut via) = match <&ruma::RoomId>::try_from(target) {
        Ok(room) => (room.to_owned(), Vec::new()),
        Err(alias) => crate::federation::membership::resolve_alias(&services, alias).await?,
    };
    via.extend(b.via);
    let (summary, membership) = crate::spaces::room_summary(&services, user.as_deref(), &room, &via).await?;
    let summary: ruma::room::RoomSummary =
        serde_json::from_value(summary).map_err(|e| Error::Internal(format!("a room summary: {e}")))?;
    let mut response = ruma::api::client::room::get_summary::v1::Response::new(summary);
    response.membership = membership.map(|m| ruma::events::room::member::MembershipState::from(m.as_str()));
    Ok(response)
}
