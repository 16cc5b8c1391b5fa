//! Third-party networks (`/thirdparty/*`): the protocols bridges (appservices) offer, and lookups
//! of their users and locations, answered by asking the appservices that registered each
//! protocol (`GET /_matrix/app/v1/thirdparty/...`). A protocol no appservice offers is unknown
//! (404 `M_NOT_FOUND`).

use std::{collections::BTreeMap, sync::Arc};

use ruma::api::client::thirdparty::{
    get_location_for_protocol, get_location_for_room_alias, get_protocol, get_protocols, get_user_for_protocol,
    get_user_for_user_id,
};
use serde_json::Value;

use crate::{
    api::ruma::Ruma,
    appservice::{
        sender::{encode_segment, thirdparty},
        Appservice,
    },
    error::{Error, Result},
    services::Services,
};

fn unknown(protocol: &str) -> Error {
    Error::not_found(format!("no bridge here offers the protocol {protocol:?}"))
}

fn offering<'a>(services: &'a Services, protocol: &'a str) -> impl Iterator<Item = &'a Appservice> + 'a {
    services.appservices.all().iter().filter(move |s| s.registration.protocols.iter().any(|p| p == protocol))
}

/// The protocol as the appservices offering it describe it, their instances merged, each with
/// the `instance_id` clients use to filter the room directory (`<appservice id>|<network id>`).
async fn describe(services: &Services, protocol: &str) -> Option<Value> {
    let mut merged: Option<Value> = None;
    for service in offering(services, protocol) {
        let Some(mut answer) = thirdparty(service, &format!("protocol/{}", encode_segment(protocol))).await else {
            continue;
        };
        let instances = answer["instances"].as_array_mut().map(std::mem::take).unwrap_or_default();
        let instances: Vec<Value> = instances
            .into_iter()
            .map(|mut instance| {
                let network = instance["network_id"].as_str().unwrap_or_default().to_owned();
                instance["instance_id"] = format!("{}|{network}", service.registration.id).into();
                instance
            })
            .collect();
        match &mut merged {
            None => {
                answer["instances"] = instances.into();
                merged = Some(answer);
            }
            Some(existing) => {
                if let Some(list) = existing["instances"].as_array_mut() {
                    list.extend(instances);
                }
            }
        }
    }
    merged
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| Error::RemoteUnreachable(format!("an appservice answered a third-party lookup badly: {e}")))
}

fn query_string(fields: &BTreeMap<String, String>) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields {
        out.append_pair(key, value);
    }
    out.finish()
}

/// Every list the appservices offering `protocol` (or all with a protocol, for `None`) answer for
/// `path`, concatenated.
async fn lookup(services: &Services, protocol: Option<&str>, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for service in services.appservices.all() {
        if protocol.is_some_and(|p| !service.registration.protocols.iter().any(|q| q == p))
            || service.registration.protocols.is_empty()
        {
            continue;
        }
        if let Some(Value::Array(items)) = thirdparty(service, path).await {
            out.extend(items);
        }
    }
    out
}

pub async fn protocols(
    services: Arc<Services>,
    request: Ruma<get_protocols::v3::Request>,
) -> Result<get_protocols::v3::Response> {
    request.sender()?;
    let mut names: Vec<&str> =
        services.appservices.all().iter().flat_map(|s| s.registration.protocols.iter().map(String::as_str)).collect();
    names.sort_unstable();
    names.dedup();
    let mut out = BTreeMap::new();
    for name in names {
        if let Some(described) = describe(&services, name).await {
            out.insert(name.to_owned(), parse(described)?);
        }
    }
    Ok(get_protocols::v3::Response::new(out))
}

pub async fn protocol(
    services: Arc<Services>,
    request: Ruma<get_protocol::v3::Request>,
) -> Result<get_protocol::v3::Response> {
    request.sender()?;
    let name = &request.body.protocol;
    let described = describe(&services, name).await.ok_or_else(|| unknown(name))?;
    Ok(get_protocol::v3::Response::new(parse(described)?))
}

/// Locations or users (`kind`) of a protocol matching the client's fields: 404 for a protocol no
/// appservice offers or when none matches.
async fn protocol_lookup(
    services: &Services,
    kind: &str,
    protocol: &str,
    fields: &BTreeMap<String, String>,
) -> Result<Vec<Value>> {
    if offering(services, protocol).next().is_none() {
        return Err(unknown(protocol));
    }
    let path = format!("{kind}/{}?{}", encode_segment(protocol), query_string(fields));
    let found = lookup(services, Some(protocol), &path).await;
    if found.is_empty() {
        return Err(Error::not_found(format!("no {kind} matches")));
    }
    Ok(found)
}

pub async fn locations_of_protocol(
    services: Arc<Services>,
    request: Ruma<get_location_for_protocol::v3::Request>,
) -> Result<get_location_for_protocol::v3::Response> {
    request.sender()?;
    let found = protocol_lookup(&services, "location", &request.body.protocol, &request.body.fields).await?;
    Ok(get_location_for_protocol::v3::Response::new(parse(Value::Array(found))?))
}

pub async fn users_of_protocol(
    services: Arc<Services>,
    request: Ruma<get_user_for_protocol::v3::Request>,
) -> Result<get_user_for_protocol::v3::Response> {
    request.sender()?;
    let found = protocol_lookup(&services, "user", &request.body.protocol, &request.body.fields).await?;
    Ok(get_user_for_protocol::v3::Response::new(parse(Value::Array(found))?))
}

/// The third-party locations bridged to an alias, as the bridges say.
pub async fn locations_of_alias(
    services: Arc<Services>,
    request: Ruma<get_location_for_room_alias::v3::Request>,
) -> Result<get_location_for_room_alias::v3::Response> {
    request.sender()?;
    let path =
        format!("location?{}", query_string(&BTreeMap::from([("alias".to_owned(), request.body.alias.to_string())])));
    let found = lookup(&services, None, &path).await;
    Ok(get_location_for_room_alias::v3::Response::new(parse(Value::Array(found))?))
}

/// The third-party users bridged to a Matrix user, as the bridges say.
pub async fn users_of_user_id(
    services: Arc<Services>,
    request: Ruma<get_user_for_user_id::v3::Request>,
) -> Result<get_user_for_user_id::v3::Response> {
    request.sender()?;
    let path =
        format!("user?{}", query_string(&BTreeMap::from([("userid".to_owned(), request.body.userid.to_string())])));
    let found = lookup(&services, None, &path).await;
    Ok(get_user_for_user_id::v3::Response::new(parse(Value::Array(found))?))
}
