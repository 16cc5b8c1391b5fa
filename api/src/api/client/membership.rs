//! Membership endpoints.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, get_member_events, invite_user, join_room_by_id, join_room_by_id_or_alias,
            joined_members, joined_rooms, kick_user, leave_room, unban_user,
        },
    },
    OwnedRoomId, RoomOrAliasId,
};
use serde_json::Map;

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    rooms::{pdu::to_raw, read::parse_any_token},
    services::Services,
};

async fn resolve(services: &Services, target: &RoomOrAliasId) -> Result<(OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    match <&ruma::RoomId>::try_from(target) {
        Ok(room) => Ok((room.to_owned(), Vec::new())),
        Err(alias) => crate::federation::membership::resolve_alias(services, alias).await,
    }
}

pub async fn join_by_id(
    services: Arc<Services>,
    request: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    let user = request.sender()?.user_id.clone();
    crate::federation::membership::join(&services, &request.body.room_id, &user, &[], request.body.reason.clone())
        .await?;
    Ok(join_room_by_id::v3::Response::new(request.body.room_id))
}

pub async fn join_by_id_or_alias(
    services: Arc<Services>,
    request: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let (room, mut servers) = resolve(&services, &request.body.room_id_or_alias).await?;
    let mut via = request.body.via.clone();
    via.append(&mut servers);
    crate::federation::membership::join(&services, &room, &user, &via, request.body.reason.clone()).await?;
    Ok(join_room_by_id_or_alias::v3::Response::new(room))
}

pub async fn invite(
    services: Arc<Services>,
    request: Ruma<invite_user::v3::Request>,
) -> Result<invite_user::v3::Response> {
    let sender = request.sender()?.user_id.clone();
    let body = request.body;
    let invitee = match body.recipient {
        invite_user::v3::InvitationRecipient::UserId(invitee) => invitee,
        invite_user::v3::InvitationRecipient::ThirdPartyId(third_party) => {
            // A ministry network refuses some addresses whatever becomes of the invite.
            services.rooms.check_threepid_invite(
                &sender,
                &body.room_id,
                third_party.medium.as_str(),
                &third_party.address,
            )?;
            if third_party.medium.as_str() != "email" {
                return Err(Error::Unrecognized("only email addresses can be invited".into()));
            }
            // An address bound to an account of this node invites that account; any other is
            // kept as a third-party invite until it is bound here. (This node answers for the
            // addresses of its own accounts only: the request's identity server is not asked.)
            match services.threepids.owner("email", &third_party.address.trim().to_lowercase())? {
                Some(owner) => invite_user::v3::InviteUserId::new(owner),
                None => {
                    if !services.users.is_shadow_banned(&sender)? {
                        services.rooms.invite_by_email(&sender, &body.room_id, &third_party.address).await?;
                    }
                    return Ok(invite_user::v3::Response::new());
                }
            }
        }
        _ => return Err(Error::Unrecognized("third-party invites are not supported".into())),
    };
    if services.users.is_shadow_banned(&sender)? {
        return Ok(invite_user::v3::Response::new());
    }
    if !services.users.is_local(&invitee.user_id) {
        let current = services.rooms.membership(&invitee.user_id, &body.room_id)?;
        if current.is_some_and(|m| matches!(m.membership.as_str(), "join" | "ban")) {
            return Err(Error::forbidden(format!("{} is already in the room or banned", invitee.user_id)));
        }
        crate::federation::membership::invite_remote(
            &services,
            &body.room_id,
            &sender,
            &invitee.user_id,
            invitee.reason,
            false,
        )
        .await?;
        return Ok(invite_user::v3::Response::new());
    }
    services
        .rooms
        .set_membership(&body.room_id, &sender, &invitee.user_id, "invite", invitee.reason, Map::new())
        .await?;
    Ok(invite_user::v3::Response::new())
}

pub async fn leave(
    services: Arc<Services>,
    request: Ruma<leave_room::v3::Request>,
) -> Result<leave_room::v3::Response> {
    let user = request.sender()?.user_id.clone();
    crate::federation::membership::leave(&services, &request.body.room_id, &user, request.body.reason.clone()).await?;
    Ok(leave_room::v3::Response::new())
}

pub async fn forget(
    services: Arc<Services>,
    request: Ruma<forget_room::v3::Request>,
) -> Result<forget_room::v3::Response> {
    services.rooms.forget(&request.body.room_id, &request.sender()?.user_id)?;
    Ok(forget_room::v3::Response::new())
}

pub async fn kick(services: Arc<Services>, request: Ruma<kick_user::v3::Request>) -> Result<kick_user::v3::Response> {
    let sender = request.sender()?.user_id.clone();
    let b = request.body;
    services.rooms.kick(&b.room_id, &sender, &b.user_id, b.reason).await?;
    Ok(kick_user::v3::Response::new())
}

pub async fn ban(services: Arc<Services>, request: Ruma<ban_user::v3::Request>) -> Result<ban_user::v3::Response> {
    let sender = request.sender()?.user_id.clone();
    let b = request.body;
    services.rooms.set_membership(&b.room_id, &sender, &b.user_id, "ban", b.reason, Map::new()).await?;
    Ok(ban_user::v3::Response::new())
}

pub async fn unban(
    services: Arc<Services>,
    request: Ruma<unban_user::v3::Request>,
) -> Result<unban_user::v3::Response> {
    let sender = request.sender()?.user_id.clone();
    let b = request.body;
    services.rooms.unban(&b.room_id, &sender, &b.user_id, b.reason).await?;
    Ok(unban_user::v3::Response::new())
}

pub async fn knock(
    services: Arc<Services>,
    request: Ruma<knock_room::v3::Request>,
) -> Result<knock_room::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let (room, mut servers) = resolve(&services, &request.body.room_id_or_alias).await?;
    let mut via = request.body.via.clone();
    via.append(&mut servers);
    crate::federation::membership::knock(&services, &room, &user, &via, request.body.reason.clone()).await?;
    Ok(knock_room::v3::Response::new(room))
}

pub async fn joined(
    services: Arc<Services>,
    request: Ruma<joined_rooms::v3::Request>,
) -> Result<joined_rooms::v3::Response> {
    let mut rooms = services.rooms.rooms_of(&request.sender()?.user_id, "join")?;
    // The discovery room is the directory's: clients list no room of it.
    rooms.retain(|room| !services.discovery.is_room(room));
    Ok(joined_rooms::v3::Response::new(rooms))
}

/// Rooms a page of `/mutual_rooms` holds.
const MUTUAL_ROOMS_PAGE: usize = 100;

/// `GET /mutual_rooms`: the rooms both users are joined to (an unknown user shares none).
pub async fn mutual_rooms(
    services: Arc<Services>,
    request: Ruma<super::endpoints::mutual_rooms::Request>,
) -> Result<super::endpoints::mutual_rooms::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    if b.user_id == user {
        return Err(Error::invalid_param("user_id is your own user id"));
    }
    let skip = match b.from.as_deref().or(b.batch_token.as_deref()) {
        Some(token) => token
            .strip_prefix('m')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid_param("invalid from token"))?,
        None => 0,
    };
    let theirs: std::collections::HashSet<OwnedRoomId> =
        services.rooms.rooms_of(&b.user_id, "join")?.into_iter().collect();
    let mut shared: Vec<OwnedRoomId> =
        services.rooms.rooms_of(&user, "join")?.into_iter().filter(|r| theirs.contains(r)).collect();
    shared.sort();
    let count = shared.len() as u64;
    let joined: Vec<OwnedRoomId> = shared.into_iter().skip(skip).take(MUTUAL_ROOMS_PAGE).collect();
    let next = (skip + joined.len() < count as usize).then(|| format!("m{}", skip + joined.len()));
    Ok(super::endpoints::mutual_rooms::Response { joined, count, next_batch: next })
}

pub async fn joined_members_of(
    services: Arc<Services>,
    request: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let mut joined = BTreeMap::new();
    for (member, content) in services.rooms.joined_members_for(&user, &request.body.room_id)? {
        let mut info = joined_members::v3::RoomMember::new();
        info.display_name = content.get("displayname").and_then(|v| v.as_str()).map(str::to_owned);
        info.avatar_url = content.get("avatar_url").and_then(|v| v.as_str()).map(Into::into);
        joined.insert(member, info);
    }
    Ok(joined_members::v3::Response::new(joined))
}

pub async fn members(
    services: Arc<Services>,
    request: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let b = request.body;
    let at = b.at.as_deref().map(parse_any_token).transpose()?;
    let state = services.rooms.full_state(services.rooms.members_snapshot(&user, &b.room_id, at)?)?;
    let mut chunk = Vec::new();
    for ((kind, _), id) in state {
        if kind != ruma::events::StateEventType::RoomMember {
            continue;
        }
        let Some(event) = services.rooms.client_event(&id)? else { continue };
        let membership = event["content"]["membership"].as_str().unwrap_or("");
        if b.membership.as_ref().is_some_and(|m| m.as_str() != membership) {
            continue;
        }
        if b.not_membership.as_ref().is_some_and(|m| m.as_str() == membership) {
            continue;
        }
        chunk.push(to_raw(&event));
    }
    Ok(get_member_events::v3::Response::new(chunk))
}
