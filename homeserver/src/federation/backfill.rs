//! History a client pages back into that this server never received (it joined later, or past
//! the history fetched with the join): asked from the room's other servers with `/backfill` from
//! the room's backward extremities, verified like any PDU, checked against its auth events and
//! stored below the room's oldest event (`Rooms::append_backfilled`).

use std::{sync::Arc, time::Duration};

use ruma::{api::federation::backfill::get_backfill, RoomId};

use super::{canonical_object, receive};
use crate::{error::Result, services::Services};

/// The longest a `/messages` request waits for other servers' history.
pub const BACKFILL_WAIT: Duration = Duration::from_secs(10);

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
            let auth = super::membership::event_refs(object.get("auth_events"));
            match receive::fetch_auth_events(services, &server, room, &auth).await {
                Ok(()) => events.push((id, object)),
                Err(error) => {
                    tracing::info!(%server, %room, event_id = %id, %error, "a backfilled event whose auth events cannot be fetched is skipped");
                }
            }
        }
        let stored = rooms.append_backfilled(room, &events).await?;
        if stored > 0 {
            return Ok(stored);
        }
    }
    Ok(0)
}
