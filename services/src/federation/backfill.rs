//! History a client pages back into that this server never received (it joined later, or past
//! the history fetched with the join): asked from the room's other servers with `/backfill` from
//! the room's backward extremities, verified like any PDU, checked against its auth events and
//! the state before it, and stored below the room's oldest event (`Rooms::append_backfilled`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use ruma::{
    api::federation::backfill::get_backfill, CanonicalJsonObject, OwnedEventId, RoomId, RoomVersionId, ServerName,
};

use super::{canonical_object, receive};
use crate::{
    error::Result,
    rooms::remote::{OlderHistory, TypedState},
    services::Services,
};

/// The longest a `/messages` request waits for other servers' history.
pub const BACKFILL_WAIT: Duration = Duration::from_secs(10);

/// The most events of one batch of history whose state is asked for (`/state_ids`). A linear
/// history has one such event per batch (its oldest); a batch needing more is mostly forks a
/// server made up, and what is left without a state is left out.
const ROOT_STATES_MAX: usize = 4;

/// Fetches up to `limit` (at most 100) older events of `room` from the first of its servers that
/// has some; answers how many were stored (0: nothing older anywhere, or nobody answered).
pub async fn older_history(services: &Arc<Services>, room: &RoomId, limit: usize) -> Result<usize> {
    let rooms = &services.rooms;
    let extremities = rooms.backward_extremities(room)?;
    let Some(record) = rooms.room(room)? else { return Ok(0) };
    if extremities.is_empty() {
        return Ok(0);
    }
    let fed = &services.federation;
    for server in receive::servers_in_room(services, room)? {
        if !fed.allowed(&server) {
            continue;
        }
        let mut request = get_backfill::v1::Request::new(room.to_owned(), extremities.clone(), Default::default());
        request.limit = limit.clamp(1, 100).try_into().unwrap_or_default();
        let answer = match fed.send(&server, request).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::info!(%server, %room, %error, "no history from this server");
                continue;
            }
        };
        let mut events = Vec::new();
        for raw in &answer.pdus {
            let object = match canonical_object(raw) {
                Ok(object) => object,
                Err(error) => {
                    tracing::info!(%server, %room, %error, "an unreadable PDU in a backfill answer is skipped");
                    continue;
                }
            };
            let (id, object) = match fed.verify_pdu(&record.version, object).await {
                Ok(verified) => verified,
                Err(error) => {
                    tracing::info!(%server, %room, %error, "a backfilled PDU that does not verify is skipped");
                    continue;
                }
            };
            events.push((id, object));
        }
        // Only what leads to our oldest event is worth fetching anything for.
        let events = crate::rooms::remote::ancestors_of(extremities.clone(), &events);
        let mut fetched = Vec::with_capacity(events.len());
        for (id, object) in events {
            let auth = super::membership::event_refs(object.get("auth_events"));
            match receive::fetch_auth_events(services, &server, room, &record.version, &auth).await {
                Ok(()) => fetched.push((id, object)),
                Err(error) => {
                    tracing::info!(%server, %room, event_id = %id, %error, "a backfilled event whose auth events cannot be fetched is skipped");
                }
            }
        }
        let roots = root_states(services, &server, room, &record.version, &fetched).await?;
        let history = OlderHistory { roots, events: fetched };
        let stored = rooms.append_backfilled(room, &history).await?;
        if stored > 0 {
            return Ok(stored);
        }
    }
    Ok(0)
}

/// The state before each event of a batch of history whose prev events we lack, asked from the
/// server that sent the batch (`/state_ids`, each event of it checked against its own auth
/// events); at most [`ROOT_STATES_MAX`]. An event whose state the server does not give is left
/// out of the answer, and so out of the timeline.
pub(super) async fn root_states(
    services: &Services,
    server: &ServerName,
    room: &RoomId,
    version: &RoomVersionId,
    events: &[(OwnedEventId, CanonicalJsonObject)],
) -> Result<HashMap<OwnedEventId, TypedState>> {
    let mut states = HashMap::new();
    for root in services.rooms.history_roots(events)?.into_iter().take(ROOT_STATES_MAX) {
        match receive::state_at(services, server, room, version, &root).await {
            Ok(state) => {
                states.insert(root, state);
            }
            Err(error) => {
                tracing::info!(%server, %room, event_id = %root, %error, "no state before this history: it is left out");
            }
        }
    }
    Ok(states)
}
