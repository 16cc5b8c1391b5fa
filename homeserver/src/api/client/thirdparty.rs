//! Third-party networks (`/thirdparty/*`): the protocols bridges (appservices) offer, and lookups
//! of their users and locations. No appservice registers a protocol yet, so there are none:
//! the lists are empty and a named protocol is unknown (404 `M_NOT_FOUND`).

use std::{collections::BTreeMap, sync::Arc};

use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols, get_user_for_protocol,
    get_user_for_user_id,
};

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    services::Services,
};

fn unknown(protocol: &str) -> Error {
    Error::not_found(format!("no bridge here offers the protocol {protocol:?}"))
}

pub async fn protocols(
    _: Arc<Services>,
    request: Ruma<get_protocols::v3::Request>,
) -> Result<get_protocols::v3::Response> {
    request.sender()?;
    Ok(get_protocols::v3::Response::new(BTreeMap::new()))
}

pub async fn protocol(
    _: Arc<Services>,
    request: Ruma<get_protocol::v3::Request>,
) -> Result<get_protocol::v3::Response> {
    request.sender()?;
    Err(unknown(&request.body.protocol))
}

pub async fn locations_of_protocol(
    _: Arc<Services>,
    request: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<get_location_for_protocol::v3::Response> {
    request.sender()?;
    Err(unknown(&request.body.protocol))
}

pub async fn users_of_protocol(
    _: Arc<Services>,
    request: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<get_user_for_protocol::v3::Response> {
    request.sender()?;
    Err(unknown(&request.body.protocol))
}

/// The third-party locations bridged to an alias: none without bridges.
pub async fn locations_of_alias(
    _: Arc<Services>,
    request: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<get_location_for_room_alias::v3::Response> {
    request.sender()?;
    Ok(get_location_for_room_alias::v3::Response::new(Vec::new()))
}

/// The third-party users bridged to a Matrix user: none without bridges.
pub async fn users_of_user_id(
    _: Arc<Services>,
    request: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<get_user_for_user_id::v3::Response> {
    request.sender()?;
    Ok(get_user_for_user_id::v3::Response::new(Vec::new()))
}
