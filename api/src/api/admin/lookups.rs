//! Account lookups and small account actions: account data, pushers, name availability, user by
//! third-party id or by directory entry, suspension, creating a device, background updates.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::{get, post, put},
    Router,
};
use ruma::{OwnedDeviceId, UserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{ok, Admin, Answer, Body, Params};
use crate::{api::error::ApiError, error::Error, services::Services, users::Restriction};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/users/{user_id}/accountdata", get(account_data))
        .route("/_synapse/admin/v1/users/{user_id}/pushers", get(pushers))
        .route("/_synapse/admin/v1/username_available", get(username_available))
        .route("/_synapse/admin/v1/threepid/{medium}/users/{address}", get(by_threepid))
        .route("/_synapse/admin/v1/auth_providers/{provider}/users/{external_id}", get(by_external_id))
        .route("/_synapse/admin/v1/suspend/{user_id}", put(suspend))
        .route("/_synapse/admin/v2/users/{user_id}/devices", post(create_device))
        .route("/_synapse/admin/v1/background_updates/enabled", get(updates_enabled).post(updates_enabled))
        .route("/_synapse/admin/v1/background_updates/status", get(updates_status))
        .route("/_synapse/admin/v1/send_server_notice", post(send_server_notice))
}

fn existing(services: &Services, raw: &str) -> Result<ruma::OwnedUserId, ApiError> {
    super::existing_user(services, raw).map(|(user, _)| user)
}

/// `{ "account_data": { "global": {type: content}, "rooms": {room: {type: content}} } }`.
async fn account_data(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let user = existing(&services, &user)?;
    let mut global = Map::new();
    let mut rooms: Map<String, Value> = Map::new();
    for (room, kind, content) in services.account_data.changes(&user, None)? {
        if room.is_empty() {
            global.insert(kind, content);
        } else {
            let entry = rooms.entry(room).or_insert_with(|| json!({}));
            entry[kind] = content;
        }
    }
    ok(json!({ "account_data": { "global": global, "rooms": rooms } }))
}

async fn pushers(State(services): State<Arc<Services>>, _: Admin, Path(user): Path<String>) -> Answer {
    let user = existing(&services, &user)?;
    let pushers = crate::push::pushers::list(&services, &user)?;
    let pushers: Vec<Value> = pushers.iter().filter_map(|p| serde_json::to_value(p).ok()).collect();
    ok(json!({ "total": pushers.len(), "pushers": pushers }))
}

/// `GET …/username_available?username=`: `{ "available": true }`, or 400 `M_USER_IN_USE` /
/// `M_INVALID_USERNAME`, as registration would answer.
async fn username_available(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Answer {
    let name = params.str("username").ok_or_else(|| Error::MissingParam("username is required".into()))?;
    let user = services.users.user_id_for_localpart(&name.to_lowercase())?;
    if services.users.exists(&user)? {
        return Err(Error::UserInUse.into());
    }
    ok(json!({ "available": true }))
}

async fn by_threepid(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((medium, address)): Path<(String, String)>,
) -> Answer {
    let address = if medium == "email" { address.trim().to_lowercase() } else { address };
    let user = services.threepids.owner(&medium, &address)?.ok_or_else(|| Error::not_found("User not found"))?;
    ok(json!({ "user_id": user }))
}

/// The account of a directory entry: `auth_providers/ldap/users/{dn}`.
async fn by_external_id(
    State(services): State<Arc<Services>>,
    _: Admin,
    Path((provider, external_id)): Path<(String, String)>,
) -> Answer {
    if provider != "ldap" {
        return Err(Error::not_found("User not found").into());
    }
    let wanted = external_id.to_lowercase();
    let user = services
        .users
        .list()?
        .into_iter()
        .find(|(_, a)| a.directory.as_ref().is_some_and(|l| l.dn.to_lowercase() == wanted))
        .map(|(u, _)| u)
        .ok_or_else(|| Error::not_found("User not found"))?;
    ok(json!({ "user_id": user }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suspend {
    suspend: bool,
}

async fn suspend(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<Suspend>,
) -> Answer {
    let user = existing(&services, &user)?;
    let value = services.users.set_restriction(&user, Restriction::Suspended, body.suspend).await?;
    admin.audit(&services, if value { "user.suspend" } else { "user.unsuspend" }, user.as_str(), json!({}))?;
    ok(json!({ format!("user_{user}_suspended"): value }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    device_id: String,
}

/// `POST /_synapse/admin/v2/users/{user_id}/devices`: a device without a session (bridges
/// create them for users they puppet).
async fn create_device(
    State(services): State<Arc<Services>>,
    admin: Admin,
    Path(user): Path<String>,
    Body(body): Body<NewDevice>,
) -> Answer {
    let user = existing(&services, &user)?;
    if body.device_id.is_empty() || body.device_id.len() > 255 {
        return Err(Error::invalid_param("device_id must be 1 to 255 bytes").into());
    }
    let device: OwnedDeviceId = body.device_id.as_str().into();
    services.users.create_device_without_token(&user, &device, None).await?;
    admin.audit(&services, "device.create", &format!("{user}/{device}"), json!({}))?;
    ok(json!({}))
}

/// Hemicycle runs no background database updates (migrations run at start-up), so there is
/// nothing to pause: the switch reads as on and the status lists none.
async fn updates_enabled(_: Admin) -> Answer {
    ok(json!({ "enabled": true }))
}

async fn updates_status(_: Admin) -> Answer {
    ok(json!({ "enabled": true, "current_updates": {} }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Notice {
    user_id: String,
    content: Value,
    #[serde(rename = "type", default = "message")]
    kind: String,
    state_key: Option<String>,
}

fn message() -> String {
    "m.room.message".to_owned()
}

/// `POST /_synapse/admin/v1/send_server_notice`: answers the event id.
async fn send_server_notice(State(services): State<Arc<Services>>, admin: Admin, Body(body): Body<Notice>) -> Answer {
    let user = UserId::parse(&body.user_id).map_err(|e| Error::invalid_param(format!("invalid user id: {e}")))?;
    let event_id = crate::rooms::notices::send(&services, &user, &body.kind, body.state_key, body.content).await?;
    admin.audit(&services, "server_notice.send", user.as_str(), json!({ "event_id": event_id }))?;
    ok(json!({ "event_id": event_id }))
}
