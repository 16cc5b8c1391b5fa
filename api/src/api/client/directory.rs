//! Room aliases, the public room directory and the user directory.

use ruma::directory::RoomNetwork;
use std::sync::Arc;

use ruma::{
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        room::{aliases, Visibility},
    },
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    room::JoinRuleKind,
    UInt,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    rooms::directory::PublicRoom,
    services::Services,
};

pub async fn create(
    services: Arc<Services>,
    request: Ruma<create_alias::v3::Request>,
) -> Result<create_alias::v3::Response> {
    let owner = request.sender()?;
    let alias = &request.body.room_alias;
    if let Some(holder) = services.appservices.exclusive_owner_of_alias(alias) {
        if owner.appservice.as_deref() != Some(holder.registration.id.as_str()) {
            return Err(Error::Exclusive("this alias is reserved by an application service".into()));
        }
    }
    services.rooms.create_alias(&owner.user_id, alias, &request.body.room_id)?;
    Ok(create_alias::v3::Response::new())
}

pub async fn get(services: Arc<Services>, request: Ruma<get_alias::v3::Request>) -> Result<get_alias::v3::Response> {
    let (room, servers) = crate::federation::membership::resolve_alias(&services, &request.body.room_alias).await?;
    Ok(get_alias::v3::Response::new(room, servers))
}

pub async fn delete(
    services: Arc<Services>,
    request: Ruma<delete_alias::v3::Request>,
) -> Result<delete_alias::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let room = services.rooms.delete_alias(&user, &request.body.room_alias)?;
    services.rooms.forget_deleted_alias(&user, &room, &request.body.room_alias).await?;
    Ok(delete_alias::v3::Response::new())
}

pub async fn room_aliases(
    services: Arc<Services>,
    request: Ruma<aliases::v3::Request>,
) -> Result<aliases::v3::Response> {
    let user = request.sender()?.user_id.clone();
    Ok(aliases::v3::Response::new(services.rooms.aliases_of(&user, &request.body.room_id)?))
}

pub async fn get_visibility(
    services: Arc<Services>,
    request: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    if !services.rooms.exists(&request.body.room_id)? {
        return Err(Error::not_found("unknown room"));
    }
    let visibility =
        if services.rooms.is_published(&request.body.room_id)? { Visibility::Public } else { Visibility::Private };
    Ok(get_room_visibility::v3::Response::new(visibility))
}

pub async fn set_visibility(
    services: Arc<Services>,
    request: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let public = match request.body.visibility {
        Visibility::Public => true,
        Visibility::Private => false,
        _ => return Err(Error::invalid_param("visibility must be public or private")),
    };
    // Server admins may (un)publish any room, as in Synapse (admin UIs' directory buttons).
    let server_admin = services.users.account(&user)?.is_some_and(|a| a.admin);
    services.rooms.set_visibility(&user, &request.body.room_id, public, server_admin)?;
    Ok(set_room_visibility::v3::Response::new())
}

fn chunk(room: PublicRoom) -> PublicRoomsChunk {
    let mut c = PublicRoomsChunk::from(PublicRoomsChunkInit {
        num_joined_members: UInt::new(room.joined_members).unwrap_or_default(),
        room_id: room.room_id,
        world_readable: room.world_readable,
        guest_can_join: room.guest_can_join,
    });
    c.name = room.name;
    c.topic = room.topic;
    c.canonical_alias = room.canonical_alias.and_then(|a| a.try_into().ok());
    c.avatar_url = room.avatar_url.map(Into::into);
    c.join_rule = room.join_rule.map(|j| JoinRuleKind::from(j.as_str())).unwrap_or(JoinRuleKind::Public);
    c.room_type = room.room_type.map(|t| t.as_str().into());
    c
}

/// One page of a public directory.
pub(crate) struct DirectoryPage {
    pub chunk: Vec<PublicRoomsChunk>,
    pub next: Option<String>,
    pub prev: Option<String>,
    pub total: u64,
}

/// One page of this server's public directory: for our clients and for other servers.
pub(crate) fn page(
    services: &Services,
    search: Option<&str>,
    since: Option<&str>,
    limit: Option<UInt>,
    network: &RoomNetwork,
) -> Result<DirectoryPage> {
    if let RoomNetwork::ThirdParty(instance) = network {
        // Instances are `<appservice id>|<network id>` (see `/thirdparty/protocols`).
        let known = instance.split_once('|').is_some_and(|(service, _)| services.appservices.get(service).is_some());
        if !known {
            return Err(Error::invalid_param(format!("unknown third-party network instance {instance:?}")));
        }
    }
    let offset = match since {
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Error::invalid_param("invalid since token"))?,
        None => 0,
    };
    let limit = limit.map(u64::from).unwrap_or(100).clamp(1, 500) as usize;
    let (rooms, total) = services.rooms.public_rooms(search, offset, limit, network)?;
    let next = (offset + rooms.len() < total).then(|| format!("o{}", offset + rooms.len()));
    let prev = (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit)));
    Ok(DirectoryPage { chunk: rooms.into_iter().map(chunk).collect(), next, prev, total: total as u64 })
}

/// The directory a client asks for: ours, or another server's (asked over federation, with the
/// search term and paging passed on).
async fn directory_of(
    services: &Services,
    server: Option<&ruma::ServerName>,
    search: Option<&str>,
    since: Option<&str>,
    limit: Option<UInt>,
    network: &RoomNetwork,
) -> Result<DirectoryPage> {
    let Some(server) = server.filter(|s| *s != services.config.server_name) else {
        return page(services, search, since, limit, network);
    };
    let mut request = ruma::api::federation::directory::get_public_rooms_filtered::v1::Request::new();
    request.limit = limit;
    request.room_network = network.clone();
    request.since = since.map(str::to_owned);
    request.filter.generic_search_term = search.map(str::to_owned);
    let answer = services.federation.send(server, request).await?;
    Ok(DirectoryPage {
        chunk: answer.chunk,
        next: answer.next_batch,
        prev: answer.prev_batch,
        total: answer.total_room_count_estimate.map(u64::from).unwrap_or_default(),
    })
}

pub async fn public_rooms(
    services: Arc<Services>,
    request: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let b = &request.body;
    let page =
        directory_of(&services, b.server.as_deref(), None, b.since.as_deref(), b.limit, &RoomNetwork::Matrix).await?;
    let mut response = get_public_rooms::v3::Response::new(page.chunk);
    response.next_batch = page.next;
    response.prev_batch = page.prev;
    response.total_room_count_estimate = UInt::new(page.total);
    Ok(response)
}

pub async fn public_rooms_filtered(
    services: Arc<Services>,
    request: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    let b = &request.body;
    let search = b.filter.generic_search_term.as_deref();
    let page =
        directory_of(&services, b.server.as_deref(), search, b.since.as_deref(), b.limit, &b.room_network).await?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next;
    response.prev_batch = page.prev;
    response.total_room_count_estimate = UInt::new(page.total);
    Ok(response)
}

/// The user directory: users sharing a room with the searcher (every agent of the network when
/// the discovery room is set) or in a public room, by id or display name, and the agent an email
/// address given whole belongs to, here or on the node of the network the address is of; users
/// who hide (or expired) left out, users of external servers marked `user_type: "external"`.
pub async fn search(
    services: Arc<Services>,
    request: Ruma<super::endpoints::search_users::Request>,
) -> Result<super::endpoints::search_users::Response> {
    use super::endpoints::search_users::{Response, User};
    let user = request.sender()?.user_id.clone();
    let limit = u64::from(request.body.limit).clamp(1, 100) as usize;
    let term = request.body.search_term.trim();
    let (mut found, mut limited) =
        services.rooms.search_users_visible(&user, term, limit, services.discovery.rooms(), |found| {
            crate::users::hide_profile::hidden(&services, found)
        })?;
    // An address given whole finds its account, as the identity lookup Tchap's clients make
    // would: bound here, or on the node the network's domain map names for it, which is asked
    // (users::email_lookup). A part of one finds nothing (addresses are not listed).
    if let Some(address) = crate::users::email_lookup::as_address(term) {
        let owned = match services.threepids.owner("email", &address)? {
            Some(owner) if !crate::users::hide_profile::hidden(&services, &owner)? => {
                let (name, avatar) = services.rooms.profile_of(&owner)?;
                Some((owner, name, avatar))
            }
            Some(_) => None,
            None => crate::users::email_lookup::remote(&services, &user, &address).await?,
        };
        if let Some(hit) = owned {
            found.retain(|(id, _, _)| *id != hit.0);
            found.insert(0, hit);
            if found.len() > limit {
                found.truncate(limit);
                limited = true;
            }
        }
    }
    let results = found
        .into_iter()
        .map(|(id, name, avatar)| User {
            user_type: services.network.is_external_user(&id).then(|| "external".to_owned()),
            user_id: id,
            display_name: name,
            avatar_url: avatar,
        })
        .collect();
    Ok(Response { results, limited })
}
