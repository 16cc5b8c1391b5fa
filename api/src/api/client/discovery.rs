//! Discovery: `/versions`, `.well-known`, `/capabilities`.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    api::{
        client::discovery::{
            get_capabilities::{
                self,
                v3::{Capabilities, ChangePasswordCapability, RoomVersionStability, RoomVersionsCapability},
            },
            get_supported_versions,
        },
        federation::discovery::discover_homeserver as discover_server,
    },
    RoomVersionId,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    services::Services,
};

/// The spec versions whose client-server API this server implements; grows as features land
/// (v1.17: application services manage their users' devices; v1.18 adds OAuth 2.0 awareness,
/// which this server does not have).
pub const SUPPORTED_VERSIONS: &[&str] = &[
    "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12", "v1.13",
    "v1.14", "v1.15", "v1.16", "v1.17",
];

pub async fn versions(
    services: Arc<Services>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let mut response =
        get_supported_versions::Response::new(SUPPORTED_VERSIONS.iter().map(|v| (*v).to_owned()).collect());
    // Element X looks for this flag before using simplified sliding sync.
    response.unstable_features = BTreeMap::from([("org.matrix.simplified_msc3575".to_owned(), true)]);
    // Element Call schedules its delayed leave only where this is announced.
    response.unstable_features.insert("org.matrix.msc4140".to_owned(), services.delayed_events.config().is_some());
    Ok(response)
}

/// `/.well-known/matrix/server`: published only when this server has a federation listener.
pub async fn well_known_server(
    services: Arc<Services>,
    _: Ruma<discover_server::Request>,
) -> Result<discover_server::Response> {
    let config = &services.config;
    match (config.federation.enabled, config.listen.federation) {
        (true, Some(addr)) => {
            let delegated = format!("{}:{}", config.server_name, addr.port());
            let server = delegated.try_into().map_err(|e| Error::Internal(format!("bad delegated name: {e}")))?;
            Ok(discover_server::Response::new(server))
        }
        _ => Err(Error::not_found("this server does not publish a federation delegation")),
    }
}

/// Room versions this server can create rooms in (and store).
pub fn room_versions() -> BTreeMap<RoomVersionId, RoomVersionStability> {
    [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12]
        .into_iter()
        .map(|v| (v, RoomVersionStability::Stable))
        .collect()
}

pub async fn capabilities(
    services: Arc<Services>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<get_capabilities::v3::Response> {
    let mut caps = Capabilities::new();
    caps.change_password = ChangePasswordCapability::new(true);
    caps.room_versions = RoomVersionsCapability::new(services.config.rooms.default_version.clone(), room_versions());
    caps.set("m.3pid_changes", serde_json::json!({ "enabled": false }))
        .and_then(|_| caps.set("m.get_login_token", serde_json::json!({ "enabled": true })))
        .and_then(|_| caps.set("m.profile_fields", serde_json::json!({ "enabled": true })))
        .and_then(|_| match services.delayed_events.config() {
            Some(delayed) => caps.set(
                "org.matrix.msc4140.delayed_events",
                serde_json::json!({ "max_delay_ms": delayed.max_delay_ms, "max_scheduled": delayed.max_per_user }),
            ),
            None => Ok(()),
        })
        .map_err(|e| Error::Internal(e.to_string()))?;
    Ok(get_capabilities::v3::Response::new(caps))
}

/// `GET /voip/turnServer`: the configured TURN servers with credentials valid for
/// `voip.turn_user_lifetime_s`, made as coturn's shared-secret scheme checks them (user name
/// `<expiry>:<user id>`, password the base64 HMAC-SHA1 of it under the secret).
pub async fn turn_server(
    services: Arc<Services>,
    request: Ruma<ruma::api::client::voip::get_turn_server_info::v3::Request>,
) -> Result<ruma::api::client::voip::get_turn_server_info::v3::Response> {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let user = request.sender()?.user_id.clone();
    let voip = &services.config.voip;
    let Some(secret) = voip.turn_shared_secret.as_ref().filter(|_| !voip.turn_uris.is_empty()) else {
        return Err(Error::not_found("this server has no TURN server configured"));
    };
    let expiry = crate::time::now_ms() / 1000 + voip.turn_user_lifetime_s;
    let username = format!("{expiry}:{user}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).map_err(|e| Error::Internal(e.to_string()))?;
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(ruma::api::client::voip::get_turn_server_info::v3::Response::new(
        username,
        password,
        voip.turn_uris.clone(),
        std::time::Duration::from_secs(voip.turn_user_lifetime_s),
    ))
}

/// `GET /.well-known/matrix/support`: the contacts and page from `[support]`; 404 when none.
pub async fn support(
    services: Arc<Services>,
    _: Ruma<ruma::api::client::discovery::discover_support::Request>,
) -> Result<ruma::api::client::discovery::discover_support::Response> {
    use ruma::api::client::discovery::discover_support::{Contact, ContactRole, Response};
    let support = &services.config.support;
    if support.contacts.is_empty() && support.page.is_none() {
        return Err(Error::not_found("no support information is configured"));
    }
    let mut contacts = Vec::new();
    for c in &support.contacts {
        let mut contact: Contact =
            serde_json::from_value(serde_json::json!({ "role": ContactRole::from(c.role.as_str()) }))
                .map_err(|e| Error::Internal(e.to_string()))?;
        contact.matrix_id = c.matrix_id.clone();
        contact.email_address = c.email_address.clone();
        contacts.push(contact);
    }
    let mut response = Response::with_contacts(contacts);
    response.support_page = support.page.clone();
    Ok(response)
}

/// `GET /.well-known/matrix/policy_server`: this server names no policy server.
pub async fn policy_server(
    _: Arc<Services>,
    _: Ruma<ruma::api::client::discovery::discover_policy_server::Request>,
) -> Result<ruma::api::client::discovery::discover_policy_server::Response> {
    Err(Error::not_found("this server has no policy server"))
}
