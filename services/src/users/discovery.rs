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
        for user in due {
            match settle(&services, &room, &via, &user).await {
                Ok(()) => {
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
    }
}

/// Joins or leaves the room as [`belongs`] says, when the membership is not that already.
async fn settle(services: &Arc<Services>, room: &RoomId, via: &[OwnedServerName], user: &UserId) -> Result<()> {
    let joined = services.rooms.is_joined(user, room)?;
    match (belongs(services, user)?, joined) {
        (true, false) => {
            crate::federation::membership::join(services, room, user, via, None).await?;
            tracing::debug!(%user, "joined the discovery room");
        }
        (false, true) => {
            crate::federation::membership::leave(services, room, user, None).await?;
            tracing::debug!(%user, "left the discovery room");
        }
        _ => {}
    }
    Ok(())
}
