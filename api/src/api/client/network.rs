//! The identity service's `info` endpoints of a ministry network, answered from the network's
//! email-domain map (`[network] domains_file`, docs/network.md): clients ask which node an agent's
//! address belongs to before they sign in or register; homeservers and other public services ask
//! the internal variant, which also says whether the node requires an invite.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;

use crate::{api::error::ApiError, error::Error, services::Services};

#[derive(Deserialize)]
pub struct Lookup {
    medium: Option<String>,
    address: Option<String>,
}

fn answer(
    services: &Services,
    lookup: Lookup,
    internal: bool,
    caller: Option<std::net::IpAddr>,
) -> Result<Response, Error> {
    if !services.network.has_domain_map() {
        return Err(Error::Unrecognized("this server keeps no email-domain map".into()));
    }
    let medium = lookup.medium.ok_or_else(|| Error::MissingParam("medium is required".into()))?;
    let address = lookup.address.ok_or_else(|| Error::MissingParam("address is required".into()))?;
    if medium != "email" {
        return Err(Error::invalid_param("only the email medium is mapped"));
    }
    let bound = services.threepids.owner("email", &address.to_lowercase())?;
    let bound_server = bound.as_ref().map(|u| u.server_name().as_str());
    let invited = services.rooms.has_pending_invite(&address)?;
    let info = services.network.info(&address, bound_server, internal, invited, caller)?;
    Ok(Json(info).into_response())
}

/// `GET /_matrix/identity/api/v1/info?medium=email&address=…` → `{hs, [new_hs], invited}`.
/// Callers outside `[network] non_shadow_ranges` are told the map's shadow names.
pub async fn info(
    State(services): State<Arc<Services>>,
    parts: http::request::Parts,
    lookup: Result<Query<Lookup>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(lookup)) = lookup else {
        return ApiError::from(Error::invalid_param("medium and address are query parameters")).into_response();
    };
    let caller = crate::api::ruma::client_ip(&parts, &services);
    answer(&services, lookup, false, caller).unwrap_or_else(|e| ApiError::from(e).into_response())
}

/// `GET /_matrix/identity/api/v1/internal-info?medium=email&address=…` → `{hs, [new_hs],
/// requires_invite, invited}`.
pub async fn internal_info(
    State(services): State<Arc<Services>>,
    lookup: Result<Query<Lookup>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(lookup)) = lookup else {
        return ApiError::from(Error::invalid_param("medium and address are query parameters")).into_response();
    };
    answer(&services, lookup, true, None).unwrap_or_else(|e| ApiError::from(e).into_response())
}

#[derive(Deserialize)]
pub struct KeyCheck {
    public_key: Option<String>,
}

/// `GET /_matrix/identity/v2/pubkey/ephemeral/isvalid?public_key=…` → `{valid}`: the
/// `key_validity_url` of the third-party invites this node sends (each with a key of its own):
/// valid while the invite stands (not taken up, revoked or expired). The long-term variant
/// (`/pubkey/isvalid`) answers the same: this node signs invites with no other key.
pub async fn key_is_valid(
    State(services): State<Arc<Services>>,
    check: Result<Query<KeyCheck>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(public_key) = check.ok().and_then(|Query(c)| c.public_key) else {
        return ApiError::from(Error::MissingParam("public_key is required".into())).into_response();
    };
    match services.rooms.invite_key_is_valid(&public_key) {
        Ok(valid) => Json(serde_json::json!({ "valid": valid })).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
