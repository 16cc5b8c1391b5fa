//! Presence endpoints.

use std::{sync::Arc, time::Duration};

use ruma::{
    api::client::presence::{get_presence, set_presence},
    presence::PresenceState,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    services::Services,
    time::now_ms,
};

pub async fn set(
    services: Arc<Services>,
    request: Ruma<set_presence::v3::Request>,
) -> Result<set_presence::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    if b.user_id != user {
        return Err(Error::forbidden("you can only set your own presence"));
    }
    if services.presence.set(&user, b.presence.as_str(), Some(b.status_msg)).await? {
        crate::appservice::sender::queue_presence(&services, &user);
    }
    Ok(set_presence::v3::Response::new())
}

pub async fn get(
    services: Arc<Services>,
    request: Ruma<get_presence::v3::Request>,
) -> Result<get_presence::v3::Response> {
    let requester = request.sender()?.user_id.clone();
    let target = request.body.user_id;
    let shares_room = requester == target
        || services
            .rooms
            .rooms_of(&requester, "join")?
            .iter()
            .any(|room| services.rooms.is_joined(&target, room).unwrap_or(false));
    if !shares_room {
        return Err(Error::forbidden("you do not share a room with this user"));
    }
    let record = services.presence.get(&target)?.ok_or_else(|| Error::not_found("no presence known for this user"))?;
    let mut response = get_presence::v3::Response::new(PresenceState::from(record.presence.as_str()));
    response.status_msg = record.status_msg;
    response.currently_active = Some(record.presence == "online");
    response.last_active_ago = Some(Duration::from_millis(now_ms().saturating_sub(record.last_active_ts)));
    Ok(response)
}
