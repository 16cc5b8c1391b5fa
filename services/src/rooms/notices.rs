//! Server notices (`POST /_synapse/admin/v1/send_server_notice`): messages from the server to one
//! of its users, in a private room between them and the notices user (`@notices:<server>`),
//! tagged `m.server_notice` so clients show it apart. One room per user, made on first use and
//! reused; a user who left it is invited back.

use ruma::{events::TimelineEventType, OwnedEventId, OwnedUserId, UserId};
use serde_json::{json, Value};

use super::{
    create::{CreateRoom, Preset},
    NewEvent,
};
use crate::{
    db::Batch,
    error::{Error, Result},
    services::Services,
};

/// The localpart of the user who sends server notices.
pub const NOTICES_LOCALPART: &str = "notices";

/// Sends `content` (an event of `kind`, a state event when `state_key` is given) to `target`.
pub async fn send(
    services: &Services,
    target: &UserId,
    kind: &str,
    state_key: Option<String>,
    content: Value,
) -> Result<OwnedEventId> {
    if !services.users.is_local(target) {
        return Err(Error::invalid_param("Server notices can only be sent to local users"));
    }
    if !services.users.is_active(target)? {
        return Err(Error::not_found("no such active user"));
    }
    if !content.is_object() {
        return Err(Error::BadJson("content must be an object".into()));
    }
    let sender = notices_user(services).await?;
    if sender == target {
        return Err(Error::invalid_param("the notices user cannot be sent notices"));
    }
    let rooms = &services.rooms;
    let existing = services.db.tables.rooms.userid_noticeroom.get(&target.to_owned())?;
    let room = match existing.filter(|room| rooms.is_joined(&sender, room).unwrap_or(false)) {
        Some(room) => {
            let membership = rooms.membership(target, &room)?.map(|m| m.membership);
            if !matches!(membership.as_deref(), Some("join" | "invite")) {
                rooms.set_membership(&room, &sender, target, "invite", None, serde_json::Map::new()).await?;
            }
            room
        }
        None => {
            let mut power = serde_json::Map::new();
            // Only the server speaks in this room.
            power.insert("events_default".into(), json!(100));
            let request = CreateRoom {
                preset: Some(Preset::PrivateChat),
                name: Some("Server notices".into()),
                invite: vec![target.to_owned()],
                power_level_override: Some(power),
                ..Default::default()
            };
            let room = rooms.create_room(&sender, request, &services.config.rooms.default_version).await?;
            let mut batch = Batch::new();
            services.db.tables.rooms.userid_noticeroom.insert(&mut batch, &target.to_owned(), &room);
            services.db.commit(batch)?;
            room
        }
    };
    services.account_data.set(target, Some(&room), "m.tag", json!({ "tags": { "m.server_notice": {} } })).await?;
    let event = match state_key {
        Some(key) => NewEvent::state(kind.into(), key, content),
        None => NewEvent::message(TimelineEventType::from(kind), content),
    };
    rooms.append(&room, &sender, event, None).await
}

/// The server notices account, made on first use.
pub async fn notices_user(services: &Services) -> Result<OwnedUserId> {
    match services.users.create(NOTICES_LOCALPART, None, false).await {
        Ok(user) => Ok(user),
        Err(Error::UserInUse) => services.users.user_id_for_localpart(NOTICES_LOCALPART),
        Err(e) => Err(e),
    }
}
