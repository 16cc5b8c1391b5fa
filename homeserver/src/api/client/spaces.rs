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
    let page = hierarchy(&services, &user, &b.room_id, query).await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.next_batch = page.next_batch;
    for chunk in page.rooms {
        let chunk: SpaceHierarchyRoomsChunk =
            serde_json::from_value(chunk).map_err(|e| Error::Internal(format!("a room summary: {e}")))?;
        response.rooms.push(chunk);
    }
    Ok(response)
}
