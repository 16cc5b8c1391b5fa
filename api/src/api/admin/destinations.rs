//! Federation destinations: every server this node has sent to, how sending goes, the rooms
//! shared with it, and resetting its backoff.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::{get, post},
    Router,
};
use ruma::{OwnedRoomId, OwnedServerName, ServerName};
use serde_json::{json, Value};

use super::{ok, paginate, Admin, Answer, Params};
use crate::{api::error::ApiError, db::codec::Be64, error::Error, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/federation/destinations", get(list))
        .route("/_synapse/admin/v1/federation/destinations/{destination}", get(details))
        .route("/_synapse/admin/v1/federation/destinations/{destination}/rooms", get(rooms))
        .route("/_synapse/admin/v1/federation/destinations/{destination}/reset_connection", post(reset))
}

/// Every destination the sender knows, with its delivered stream position.
pub(crate) fn known(services: &Services) -> Result<Vec<(OwnedServerName, u64)>, ApiError> {
    services
        .db
        .tables
        .federation
        .servername_sentpos
        .iter()
        .map(|entry| entry.map(|(server, Be64(pos))| (server, pos)).map_err(|e| Error::from(e).into()))
        .collect()
}

fn destination_json(services: &Services, server: &ServerName, sent: u64) -> Value {
    let health = services.federation.client.health(server);
    json!({
        "destination": server,
        "retry_last_ts": health.last_failure_ms.unwrap_or(0),
        "retry_interval": health.retry_interval_ms,
        "failure_ts": health.first_failure_ms,
        "last_successful_stream_ordering": sent,
        "last_success_ts": health.last_success_ms,
        "failures": health.failures,
    })
}

/// A destination the sender knows, from its name: 400 for a bad name, 404 when unknown.
pub(crate) fn find(services: &Services, raw: &str) -> Result<(OwnedServerName, u64), ApiError> {
    let server = ServerName::parse(raw).map_err(|e| Error::invalid_param(format!("invalid server name: {e}")))?;
    known(services)?
        .into_iter()
        .find(|(s, _)| *s == server)
        .ok_or_else(|| Error::not_found("Unknown destination").into())
}

/// `GET /_synapse/admin/v1/federation/destinations`: `destination` (substring), `order_by`
/// (`destination`, `retry_last_ts`, `retry_interval`, `failure_ts`,
/// `last_successful_stream_ordering`), `dir`, `from`, `limit`.
async fn list(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Answer {
    let (from, limit) = params.page()?;
    let order_by = params.str("order_by").unwrap_or("destination");
    let known_orders =
        ["destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering"];
    if !known_orders.contains(&order_by) {
        return Err(Error::invalid_param(format!("unknown order_by {order_by:?}")).into());
    }
    let search = params.str("destination").map(str::to_lowercase);
    let mut rows: Vec<Value> = known(&services)?
        .iter()
        .filter(|(s, _)| search.as_ref().is_none_or(|q| s.as_str().to_lowercase().contains(q.as_str())))
        .map(|(s, pos)| destination_json(&services, s, *pos))
        .collect();
    // Destinations come in name order; the stable sort keeps it among equals.
    super::sort_by_field(&mut rows, order_by);
    if params.backwards()? {
        rows.reverse();
    }
    let total = rows.len();
    let (page, next) = paginate(rows, from, limit);
    let mut body = json!({ "destinations": page, "total": total });
    if let Some(next) = next {
        body["next_token"] = json!(next.to_string());
    }
    ok(body)
}

async fn details(State(services): State<Arc<Services>>, _: Admin, Path(destination): Path<String>) -> Answer {
    let (server, pos) = find(&services, &destination)?;
    ok(destination_json(&services, &server, pos))
}

/// Rooms where the destination has joined members.
async fn rooms(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path(destination): Path<String>,
    params: Params,
) -> Answer {
    let (server, _) = find(&services, &destination)?;
    let (from, limit) = params.page()?;
    let shared: Vec<Value> = shared_rooms(&services, &server)?
        .into_iter()
        .map(|(room, depth)| json!({ "room_id": room, "stream_ordering": depth }))
        .collect();
    let total = shared.len();
    let (page, next) = paginate(shared, from, limit);
    let mut body = json!({ "rooms": page, "total": total });
    if let Some(next) = next {
        body["next_token"] = json!(next.to_string());
    }
    ok(body)
}

/// The rooms where `server` has joined members, with each room's depth: the rooms this node
/// shares with that peer (the admin API and the console's peers page).
pub(crate) fn shared_rooms(services: &Services, server: &ServerName) -> Result<Vec<(OwnedRoomId, u64)>, ApiError> {
    let mut shared = Vec::new();
    for entry in services.db.tables.rooms.roomid_room.iter() {
        let (room, record) = entry.map_err(Error::from)?;
        let members = services.rooms.members(&room)?;
        if members.iter().any(|(u, m)| m.membership == "join" && u.server_name() == server) {
            shared.push((room, record.0.depth));
        }
    }
    Ok(shared)
}

/// Ends a destination's backoff, wakes its sender and records who did it (admin API, console).
pub(crate) fn reset_connection(services: &Services, admin: &Admin, raw: &str) -> Result<OwnedServerName, ApiError> {
    let (server, _) = find(services, raw)?;
    services.federation.client.reset_backoff(&server);
    services.federation.sender.wake(&server);
    services.federation.threepid_retries.server_up(&server);
    admin.audit(services, "destination.reset_connection", server.as_str(), json!({}))?;
    Ok(server)
}

/// `POST …/reset_connection`: forgets the destination's failures and sends what waits at once.
async fn reset(State(services): State<Arc<Services>>, admin: Admin, Path(destination): Path<String>) -> Answer {
    reset_connection(&services, &admin, &destination)?;
    ok(json!({}))
}
