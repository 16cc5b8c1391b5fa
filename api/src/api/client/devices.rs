//! Device management.

use std::sync::Arc;

use ruma::{
    api::client::device::{self, delete_device, delete_devices, get_device, get_devices, update_device},
    MilliSecondsSinceUnixEpoch, OwnedDeviceId, UInt,
};

use crate::{
    api::{
        error::ApiError,
        ruma::{authenticate, read_body, Ruma, TokenUse},
    },
    error::{Error, Result},
    services::Services,
    uia, users,
};

fn to_api(device_id: OwnedDeviceId, device: users::Device) -> device::Device {
    let mut out = device::Device::new(device_id);
    out.display_name = device.display_name;
    out.last_seen_ip = device.last_seen_ip;
    out.last_seen_ts = device.last_seen_ts.and_then(UInt::new).map(MilliSecondsSinceUnixEpoch);
    out
}

pub async fn list(
    services: Arc<Services>,
    request: Ruma<get_devices::v3::Request>,
) -> Result<get_devices::v3::Response> {
    let devices = services.users.devices(&request.sender()?.user_id)?;
    Ok(get_devices::v3::Response::new(devices.into_iter().map(|(id, d)| to_api(id, d)).collect()))
}

pub async fn get(services: Arc<Services>, request: Ruma<get_device::v3::Request>) -> Result<get_device::v3::Response> {
    let user = &request.sender()?.user_id;
    let device =
        services.users.device(user, &request.body.device_id)?.ok_or_else(|| Error::not_found("no such device"))?;
    Ok(get_device::v3::Response::new(to_api(request.body.device_id, device)))
}

/// `PUT /devices/{deviceId}`: renames one of the user's devices (200); an application service
/// may also create a device of one of its users this way (201, spec v1.17; the device has no
/// access token: the appservice acts on it with `device_id`). Served outside the ruma extractor
/// because the two successes differ in status.
pub async fn update(
    axum::extract::State(services): axum::extract::State<Arc<Services>>,
    axum::extract::Path(device_id): axum::extract::Path<String>,
    request: axum::extract::Request,
) -> std::result::Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    #[derive(serde::Deserialize)]
    struct Body {
        display_name: Option<String>,
    }
    let (parts, body) = request.into_parts();
    let owner = authenticate(&parts, &services, TokenUse::Required)?.ok_or_else(ApiError::missing_token)?;
    let bytes = read_body(&parts, body, services.config.limits.max_request_size).await?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(ApiError::not_json)?;
    let body: Body = serde_json::from_value(value)
        .map_err(|e| Error::BadJson(format!("the body does not match this endpoint: {e}")))?;
    if body.display_name.as_ref().is_some_and(|name| name.len() > 512) {
        return Err(Error::invalid_param("device display names are at most 512 bytes").into());
    }
    if device_id.is_empty() || device_id.len() > 255 {
        return Err(Error::invalid_param("device_id must be 1 to 255 bytes").into());
    }
    let device_id: OwnedDeviceId = device_id.into();
    let user = &owner.user_id;
    if owner.appservice.is_some() && services.users.device(user, &device_id)?.is_none() {
        services.users.create_device_without_token(user, &device_id, body.display_name).await?;
        return Ok((axum::http::StatusCode::CREATED, axum::Json(serde_json::json!({}))).into_response());
    }
    services.users.set_device_display_name(user, &device_id, body.display_name).await?;
    Ok(axum::Json(serde_json::json!({})).into_response())
}

/// Routes [`update`] on every path of the spec's endpoint.
pub fn route_update(mut router: axum::Router<Arc<Services>>) -> axum::Router<Arc<Services>> {
    use ruma::api::{path_builder::PathBuilder, Metadata};
    for path in update_device::v3::Request::PATH_BUILDER.all_paths() {
        router = router.route(path, axum::routing::put(update));
    }
    router
}

pub async fn delete(
    services: Arc<Services>,
    request: Ruma<delete_device::v3::Request>,
) -> Result<delete_device::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    if services.users.device(&user, &body.device_id)?.is_none() {
        return Err(Error::not_found("no such device"));
    }
    // Spec v1.17: no UIA for an application service.
    if request.owner.as_ref().is_none_or(|o| o.appservice.is_none()) {
        services
            .uia
            .authorize(&services.users, body.auth.as_ref(), &[&[uia::PASSWORD]], Some(&user), "delete_devices")
            .await?;
    }
    services.users.remove_device(&user, &body.device_id).await?;
    Ok(delete_device::v3::Response::new())
}

pub async fn delete_many(
    services: Arc<Services>,
    request: Ruma<delete_devices::v3::Request>,
) -> Result<delete_devices::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let by_appservice = request.owner.as_ref().is_some_and(|o| o.appservice.is_some());
    let body = request.body;
    if !by_appservice {
        services
            .uia
            .authorize(&services.users, body.auth.as_ref(), &[&[uia::PASSWORD]], Some(&user), "delete_devices")
            .await?;
    }
    for device in &body.devices {
        services.users.remove_device(&user, device).await?;
    }
    Ok(delete_devices::v3::Response::new())
}

/// `GET /admin/whois/{userId}`: a user's devices with where and when each was last seen; for
/// server admins, or the user about themselves (403 otherwise, 404 for no such local user).
pub async fn whois(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::admin::get_user_info::v3::Request>,
) -> Result<ruma::api::client::admin::get_user_info::v3::Response> {
    use ruma::api::client::admin::get_user_info::v3::{DeviceInfo, Response};
    let requester = request.sender()?.user_id.clone();
    let target = request.body.user_id;
    let admin = services.users.account(&requester)?.is_some_and(|a| a.admin);
    if requester != target && !admin {
        return Err(Error::forbidden("only server admins may look up other users"));
    }
    if !services.users.is_local(&target) || services.users.account(&target)?.is_none() {
        return Err(Error::not_found("no such user on this server"));
    }
    let mut response = Response::new();
    response.user_id = Some(target.clone());
    for (device_id, device) in services.users.devices(&target)? {
        let mut connection = serde_json::Map::new();
        if let Some(ip) = device.last_seen_ip {
            connection.insert("ip".into(), ip.into());
        }
        if let Some(ts) = device.last_seen_ts {
            connection.insert("last_seen".into(), ts.into());
        }
        let info: DeviceInfo =
            serde_json::from_value(serde_json::json!({ "sessions": [{ "connections": [connection] }] }))
                .map_err(|e| Error::Internal(e.to_string()))?;
        response.devices.insert(device_id.to_string(), info);
    }
    Ok(response)
}

/// The requester, when a server admin; the target, when one of our accounts.
fn admin_target(services: &Services, requester: &ruma::UserId, target: &ruma::UserId) -> Result<()> {
    if !services.users.account(requester)?.is_some_and(|a| a.admin) {
        return Err(Error::forbidden("only server admins may do this"));
    }
    if !services.users.is_local(target) {
        return Err(Error::invalid_param("not a user of this server"));
    }
    if services.users.account(target)?.is_none() {
        return Err(Error::not_found("no such user"));
    }
    Ok(())
}

pub async fn is_locked(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::admin::is_user_locked::v1::Request>,
) -> Result<ruma::api::client::admin::is_user_locked::v1::Response> {
    let target = &request.body.user_id;
    admin_target(&services, &request.sender()?.user_id, target)?;
    let locked = services.users.account(target)?.is_some_and(|a| a.locked);
    Ok(ruma::api::client::admin::is_user_locked::v1::Response::new(locked))
}

pub async fn lock(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::admin::lock_user::v1::Request>,
) -> Result<ruma::api::client::admin::lock_user::v1::Response> {
    let target = &request.body.user_id;
    admin_target(&services, &request.sender()?.user_id, target)?;
    let locked = services.users.set_restriction(target, crate::users::Restriction::Locked, request.body.locked).await?;
    tracing::info!(user = %target, locked, by = %request.sender()?.user_id, "account lock changed");
    Ok(ruma::api::client::admin::lock_user::v1::Response::new(locked))
}

pub async fn is_suspended(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::admin::is_user_suspended::v1::Request>,
) -> Result<ruma::api::client::admin::is_user_suspended::v1::Response> {
    let target = &request.body.user_id;
    admin_target(&services, &request.sender()?.user_id, target)?;
    let suspended = services.users.account(target)?.is_some_and(|a| a.suspended);
    Ok(ruma::api::client::admin::is_user_suspended::v1::Response::new(suspended))
}

pub async fn suspend(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::admin::suspend_user::v1::Request>,
) -> Result<ruma::api::client::admin::suspend_user::v1::Response> {
    let target = &request.body.user_id;
    admin_target(&services, &request.sender()?.user_id, target)?;
    let suspended =
        services.users.set_restriction(target, crate::users::Restriction::Suspended, request.body.suspended).await?;
    tracing::info!(user = %target, suspended, by = %request.sender()?.user_id, "account suspension changed");
    Ok(ruma::api::client::admin::suspend_user::v1::Response::new(suspended))
}
