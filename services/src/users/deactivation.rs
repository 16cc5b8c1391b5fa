//! Deactivating an account, as Synapse does it: besides closing the account (`Users::deactivate`),
//! the user leaves every room they are in and rejects their pending invites, each as a leave event
//! through the one write path, so other members stop seeing them and rooms stop counting them in
//! their audience; with `erase`, their messages are shown pruned to anyone who was not there when
//! they were sent (`rooms::visibility`).
//!
//! Its scheduled events (MSC4140 delayed events) are dropped before anything else.
//!
//! The account is marked "leaving rooms" in the same write that deactivates it and unmarked once
//! every room is left. A deactivation interrupted by a crash is finished at the next start
//! ([`resume`]); leaving is idempotent, since a room already left is skipped.

use ruma::UserId;

use crate::{error::Result, services::Services};

/// Test hook: abort the process after this many rooms were left, to exercise an interrupted
/// deactivation. Never set in production (not `HEMICYCLE_*`: those are configuration keys).
const ABORT_AFTER_ENV: &str = "FAULT_HEMICYCLE_ABORT_DEACTIVATION_AFTER";

/// Deactivates `user` and makes them leave every room.
pub async fn deactivate(services: &Services, user: &UserId, erase: bool) -> Result<()> {
    // First, so that none of their scheduled events (MSC4140) goes out while they leave.
    let dropped = services.delayed_events.cancel_all_for(user).await?;
    if dropped > 0 {
        tracing::info!(%user, dropped, "scheduled events of a deactivated account dropped");
    }
    services.users.deactivate(user, erase).await?;
    // Its addresses are freed: they may serve another account, and reset nothing here.
    for (medium, address, _) in services.threepids.list(user)? {
        services.threepids.remove(user, &medium, &address)?;
    }
    leave_rooms(services, user).await
}

/// Finishes every deactivation a previous run did not (called at start-up).
pub async fn resume(services: &Services) -> Result<()> {
    for (user, account) in services.users.list()? {
        if account.deactivated && account.leaving_rooms {
            tracing::info!(%user, "finishing an interrupted deactivation");
            leave_rooms(services, &user).await?;
        }
    }
    Ok(())
}

async fn leave_rooms(services: &Services, user: &UserId) -> Result<()> {
    let abort_after: Option<usize> = std::env::var(ABORT_AFTER_ENV).ok().and_then(|v| v.parse().ok());
    let mut left = 0;
    for (room, membership) in services.rooms.memberships_of(user)? {
        if !matches!(membership.membership.as_str(), "join" | "invite" | "knock") || !services.rooms.exists(&room)? {
            continue;
        }
        if let Err(error) = services.rooms.set_membership(&room, user, user, "leave", None, Default::default()).await {
            // One room refusing (its auth rules) must not keep the account in its other rooms.
            tracing::warn!(%user, %room, %error, "a deactivated account could not leave a room");
            continue;
        }
        left += 1;
        if abort_after.is_some_and(|n| left >= n) {
            tracing::error!(%user, left, "{ABORT_AFTER_ENV} reached: aborting mid-deactivation");
            std::process::abort();
        }
    }
    services.users.rooms_left(user).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ruma::{events::TimelineEventType, RoomVersionId};
    use serde_json::json;

    use super::deactivate;
    use crate::{
        config::{Config, DelayedEventsConfig},
        rooms::{create::CreateRoom, NewEvent},
        services::Services,
    };

    /// A deactivated account sends nothing later: its scheduled events are dropped with it
    /// (another user's stay), the one due in 50 ms included.
    #[tokio::test]
    async fn a_deactivated_account_sends_no_scheduled_event() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.database.path = dir.path().join("db");
        config.delayed_events = Some(DelayedEventsConfig { max_delay_ms: 600_000, max_per_user: 100 });
        let services = Arc::new(Services::open(config).expect("services"));
        let alice = services.users.create("alice", None, false).await.expect("alice");
        let bob = services.users.create("bob", None, false).await.expect("bob");
        let room = services.rooms.create_room(&alice, CreateRoom::default(), &RoomVersionId::V12).await.expect("room");
        services.rooms.set_membership(&room, &alice, &bob, "invite", None, Default::default()).await.expect("invited");
        services.rooms.set_membership(&room, &bob, &bob, "join", None, Default::default()).await.expect("bob joins");
        let note = || NewEvent::message(TimelineEventType::from("m.test.later"), json!({ "later": true }));
        let delayed = &services.delayed_events;
        for _ in 0..2 {
            delayed.add(&services, &alice, &room, note(), 600_000).await.expect("alice's");
        }
        delayed.add(&services, &bob, &room, note(), 600_000).await.expect("bob's");
        let soon = delayed.add(&services, &alice, &room, note(), 50).await.expect("alice's, soon");

        deactivate(&services, &alice, false).await.expect("deactivated");
        assert!(delayed.list(&alice).unwrap().is_empty(), "alice's scheduled events are gone");
        assert!(delayed.get(&soon).unwrap().is_none());
        assert_eq!(delayed.list(&bob).unwrap().len(), 1, "bob's stays");
        // Asking for it to be sent is refused: it is unknown now.
        assert!(delayed.send_now(&services, &soon).await.is_err());
    }
}
