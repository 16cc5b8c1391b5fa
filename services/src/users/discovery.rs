//! The discovery room, as the state's messenger runs it: every agent of every node of the network
//! is a member of one room, so each node's user directory — which finds the users who share a room
//! with the searcher — knows every agent of the network from that room's member events, Synapse
//! nodes included (they join their users through `auto_join_rooms`). An agent who hides
//! (`im.vector.hide_profile`), expires or is deactivated leaves it, so the other nodes' directories
//! drop them; showing again or renewing joins it again. Clients are never shown the room (sync,
//! room lists, notifications leave it out): it is the directory's, not the user's.
//!
//! One task keeps each account's membership as it should be. The services that change what it
//! depends on only name the account ([`Discovery::touch`]); the task takes the names, joins or
//! leaves, and tries failures again later. At start it goes over every account once, which takes
//! in accounts that predate the setting and any change a crash cut short (the membership itself is
//! durable, the queue is not).
//!
//! As Tchap caps its discovery room, a room that filled up is listed as passive
//! (`directory.discovery_passive_rooms`): its members stay, no one joins it, those who no longer
//! belong leave it; the operator is mailed when the room agents join reaches its size.

pub mod state;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use ruma::{OwnedRoomId, OwnedServerName, RoomId, UserId};

pub use self::state::Discovery;
use crate::{config::DiscoveryRoom, error::Result, services::Services};

/// The first wait before a failed join or leave (the room's server away) is tried again; it
/// doubles up to [`MAX_RETRY`] while failures go on.
const FIRST_RETRY: Duration = Duration::from_secs(15);
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// Whether `user` belongs in the discovery room: an active account of this node that is not
/// hidden from the directory (`im.vector.hide_profile`, expired), and not a user of an
/// application service's exclusive namespace (bridged users and bots are not agents).
pub fn belongs(services: &Services, user: &UserId) -> Result<bool> {
    if !services.users.is_local(user) || services.appservices.exclusive_owner_of_user(user).is_some() {
        return Ok(false);
    }
    Ok(!crate::users::hide_profile::hidden(services, user)?)
}

/// Starts the task when `directory.discovery_room` is set.
pub fn start(services: Arc<Services>) {
    if services.discovery.enabled() {
        tokio::spawn(run(services));
    }
}

/// The room's id and the servers to join it through: the alias resolved (tried again with
/// growing waits while its server cannot answer, unless it was resolved at an earlier start, whose
/// answer then serves), or the id's own server.
async fn resolve(services: &Services) -> (OwnedRoomId, Vec<OwnedServerName>) {
    let mut wait = FIRST_RETRY;
    loop {
        let found = match services.discovery.configured.clone() {
            Some(DiscoveryRoom::Id(id)) => {
                Ok((id.clone(), id.server_name().map(ToOwned::to_owned).into_iter().collect()))
            }
            Some(DiscoveryRoom::Alias(alias)) => {
                crate::federation::membership::resolve_alias(services, &alias).await.map(|(room, mut servers)| {
                    servers.insert(0, alias.server_name().to_owned());
                    servers.dedup();
                    (room, servers)
                })
            }
            None => unreachable!("the task runs only with a discovery room"),
        };
        match found {
            Ok((room, servers)) => {
                if let Err(error) = services.discovery.set_room(&room) {
                    tracing::error!(%error, "keeping the discovery room's id failed");
                }
                tracing::info!(%room, "discovery room");
                return (room, servers);
            }
            Err(error) => {
                if let (Some(room), Some(DiscoveryRoom::Alias(alias))) =
                    (services.discovery.room(), services.discovery.configured.as_ref())
                {
                    tracing::warn!(%error, %room, "the discovery room's alias could not be resolved: the room it resolved to before serves");
                    let servers = std::iter::once(alias.server_name().to_owned())
                        .chain(room.server_name().map(ToOwned::to_owned))
                        .collect();
                    return (room, servers);
                }
                tracing::warn!(%error, retry_in = ?wait, "the discovery room's alias could not be resolved");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}

async fn run(services: Arc<Services>) {
    let (room, via) = resolve(&services).await;
    match services.users.list() {
        Ok(accounts) => {
            for (user, _) in accounts {
                services.discovery.touch(&user);
            }
        }
        Err(error) => tracing::error!(%error, "listing the accounts for the discovery room failed"),
    }
    let mut failed: BTreeSet<ruma::OwnedUserId> = BTreeSet::new();
    let mut wait = FIRST_RETRY;
    let mut alerted = false;
    check_size(&services, &room, &mut alerted).await;
    loop {
        let woken = services.discovery.wake.notified();
        let due = std::mem::take(&mut *services.discovery.pending.lock().expect("discovery queue"));
        if due.is_empty() {
            if failed.is_empty() {
                woken.await;
            } else {
                tokio::select! {
                    _ = woken => {}
                    _ = tokio::time::sleep(wait) => {
                        services.discovery.pending.lock().expect("discovery queue").append(&mut failed);
                        wait = (wait * 2).min(MAX_RETRY);
                    }
                }
            }
            continue;
        }
        let mut grew = false;
        for user in due {
            match settle(&services, &room, &via, &user).await {
                Ok(joined) => {
                    grew |= joined;
                    failed.remove(&user);
                }
                Err(error) => {
                    tracing::warn!(%user, %room, %error, "discovery room membership not settled; trying again later");
                    failed.insert(user);
                }
            }
        }
        if failed.is_empty() {
            wait = FIRST_RETRY;
        }
        if grew {
            check_size(&services, &room, &mut alerted).await;
        }
    }
}

/// Tells the operator, once each time it happens, that the room agents join reached
/// `directory.discovery_room_max_size` joined members — as Tchap's red list module mails its
/// support address — so that they open a new room for the next agents and list this one among
/// `directory.discovery_passive_rooms`. Counted after a round of joins, not at each one: the
/// count reads every membership of the room.
async fn check_size(services: &Services, room: &RoomId, alerted: &mut bool) {
    let max = services.config.directory.discovery_room_max_size();
    let joined = match services.rooms.members(room) {
        Ok(members) => members.iter().filter(|(_, m)| m.membership == "join").count() as u64,
        Err(error) => {
            tracing::warn!(%room, %error, "counting the discovery room's members failed");
            return;
        }
    };
    if joined < max {
        *alerted = false;
        return;
    }
    if std::mem::replace(alerted, true) {
        return;
    }
    tracing::warn!(%room, joined, max, "the discovery room reached its size: open a new one and list this one as passive");
    let Some(to) = services.config.directory.discovery_alert_email.as_deref() else { return };
    let server = &services.config.server_name;
    let subject = format!("{server} - la salle de découverte est pleine / the discovery room is full");
    let body = format!(
        "Bonjour,\n\nLa salle de découverte {room} compte {joined} membres (limite : {max}).\n\
         Créez-en une nouvelle pour les prochains agents et inscrivez celle-ci parmi \
         directory.discovery_passive_rooms.\n\n---\n\nHello,\n\nThe discovery room {room} has {joined} \
         members (limit: {max}).\nCreate a new one for the next agents and list this one in \
         directory.discovery_passive_rooms.\n"
    );
    if let Err(error) = services.threepids.send_email(to, &subject, body).await {
        tracing::error!(%error, "mailing the discovery room alert failed");
    }
}

/// Joins or leaves the room as [`belongs`] says, when the membership is not that already: an
/// agent joins the room unless a passive room already holds them; one who does not belong leaves
/// every discovery room they are in. Says whether the agent joined the room.
async fn settle(services: &Arc<Services>, room: &RoomId, via: &[OwnedServerName], user: &UserId) -> Result<bool> {
    let mut joined = Vec::new();
    for candidate in std::iter::once(room).chain(services.discovery.passives.iter().map(|p| &**p)) {
        if services.rooms.is_joined(user, candidate)? {
            joined.push(candidate);
        }
    }
    if belongs(services, user)? {
        if joined.is_empty() {
            crate::federation::membership::join(services, room, user, via, None).await?;
            tracing::debug!(%user, "joined the discovery room");
            return Ok(true);
        }
        return Ok(false);
    }
    for left in joined {
        crate::federation::membership::leave(services, left, user, None).await?;
        tracing::debug!(%user, room = %left, "left a discovery room");
    }
    Ok(false)
}
