//! Server-Server API handlers: thin, like the client ones. Every request but the key endpoints
//! carries an X-Matrix signature that the `Ruma` extractor verified; `origin` is who signed it.

use std::{collections::BTreeMap, sync::Arc};

use axum::Router;
use ruma::{
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        discovery::{get_remote_server_keys, get_remote_server_keys_batch, get_server_keys, get_server_version},
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
        membership::{create_invite, create_join_event, create_leave_event, prepare_join_event, prepare_leave_event},
        query::{get_custom_information, get_profile_information, get_room_information},
        thirdparty::{bind_callback, exchange_invite},
        transactions::send_transaction_message,
    },
    events::StateEventType,
    serde::Raw,
    CanonicalJsonObject, EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedServerName, RoomId, ServerName,
    UserId,
};
use serde_json::value::RawValue;

use super::ruma::{RouterExt, Ruma};
use crate::{
    error::{Error, Result},
    federation::{canonical_object, membership::supported_versions, receive, Federation},
    rooms::NewEvent,
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .ruma(version)
        .ruma(openid_userinfo)
        .ruma(server_keys)
        .ruma(key_query)
        .ruma(key_query_one)
        .ruma(send)
        .ruma(make_join)
        .ruma(send_join)
        .ruma(make_knock)
        .ruma(send_knock)
        .ruma(make_leave)
        .ruma(send_leave)
        .ruma(invite)
        .ruma(backfill)
        .ruma(event)
        .ruma(state_ids)
        .ruma(state)
        .ruma(event_auth)
        .ruma(missing_events)
        .ruma(query_profile)
        .ruma(query_directory)
        .ruma(query_custom)
        .ruma(user_keys_query)
        .ruma(user_keys_claim)
        .ruma(user_devices)
        .ruma(public_rooms)
        .ruma(public_rooms_filtered)
        .ruma(hierarchy)
        .ruma(media_download)
        .ruma(media_thumbnail)
        .ruma(third_party_bound)
        .ruma(exchange_third_party_invite)
        .ruma(network_status)
        .ruma(receive_proposal)
        .ruma(receive_proposal_decision)
}

fn origin<R>(request: &Ruma<R>) -> Result<OwnedServerName> {
    request.origin.clone().ok_or_else(|| Error::Unauthorized("the request is not signed".into()))
}

fn raw(json: &[u8]) -> Result<Box<RawValue>> {
    RawValue::from_string(String::from_utf8_lossy(json).into_owned()).map_err(|e| Error::Internal(e.to_string()))
}

/// The PDU of a stored event as other servers see it.
fn pdu_raw(services: &Services, event: &EventId) -> Result<Option<Box<RawValue>>> {
    match services.rooms.pdu_json_for_peers(event)? {
        Some(json) => Ok(Some(raw(&json)?)),
        None => Ok(None),
    }
}

/// The origin must have a member joined to the room now (or the room be world-readable now) to
/// read from it at all; what it then gets is filtered event by event by the history visibility.
/// A `shared` setting opens history to servers *in* the room, never to one that only knows its id.
fn require_in_room(services: &Services, origin: &ServerName, room: &RoomId) -> Result<()> {
    if !services.rooms.exists(room)? {
        return Err(Error::not_found("this server does not know the room"));
    }
    if !receive::acl_allows(services, room, origin) {
        return Err(Error::forbidden("the room's server ACL denies your server"));
    }
    let member = services.rooms.members(room)?.iter().any(|(u, m)| u.server_name() == origin && m.membership == "join");
    if member || services.rooms.world_readable(room)? {
        Ok(())
    } else {
        Err(Error::forbidden("your server has no member in this room"))
    }
}

/// `GET /openid/userinfo`: who an OpenID token belongs to (asked by widgets and integration
/// managers, with no server signature).
pub async fn openid_userinfo(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::openid::get_openid_userinfo::v1::Request>,
) -> Result<ruma::api::federation::openid::get_openid_userinfo::v1::Response> {
    let user = services.users.openid_user(&request.body.access_token)?;
    Ok(ruma::api::federation::openid::get_openid_userinfo::v1::Response::new(user))
}

/// `GET /_matrix/federation/unstable/org.hemicycle.status`: this node's status document, signed,
/// for a server we federate with (the X-Matrix check has refused every other), with the state
/// hashes of the rooms it shares with us only.
pub async fn network_status(
    services: Arc<Services>,
    request: Ruma<crate::network::status::endpoint::Request>,
) -> Result<crate::network::status::endpoint::Response> {
    let origin = origin(&request)?;
    services.rate_limiter.check(crate::ratelimit::Action::FederationStatus, origin.as_str())?;
    let services2 = services.clone();
    let document = tokio::task::spawn_blocking(move || crate::network::status::signed_for(&services2, &origin))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let document = serde_json::value::to_raw_value(&document).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(crate::network::status::endpoint::Response::new(document))
}

/// `PUT /_matrix/federation/unstable/org.hemicycle.proposal/{id}`: another node's admin proposes
/// an action on this node; it waits for one of our admins (network/proposals.rs).
pub async fn receive_proposal(
    services: Arc<Services>,
    request: Ruma<crate::network::proposals::propose_endpoint::Request>,
) -> Result<crate::network::proposals::propose_endpoint::Response> {
    let origin = origin(&request)?;
    crate::network::proposals::receive(&services, &origin, request.body)?;
    Ok(Default::default())
}

/// `PUT /_matrix/federation/unstable/org.hemicycle.proposal_decision/{id}`: what the node we
/// proposed to decided.
pub async fn receive_proposal_decision(
    services: Arc<Services>,
    request: Ruma<crate::network::proposals::decision_endpoint::Request>,
) -> Result<crate::network::proposals::decision_endpoint::Response> {
    let origin = origin(&request)?;
    crate::network::proposals::receive_decision(&services, &origin, request.body)?;
    Ok(Default::default())
}

pub async fn version(
    _: Arc<Services>,
    _: Ruma<get_server_version::v1::Request>,
) -> Result<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Hemicycle".into());
    server.version = Some(env!("CARGO_PKG_VERSION").into());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response)
}

fn document_raw<T>(document: &CanonicalJsonObject) -> Result<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(document).map_err(|e| Error::Internal(e.to_string()))?))
}

pub async fn server_keys(
    services: Arc<Services>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    let document = services.server_keys.key_document()?;
    Ok(get_server_keys::v2::Response::new(document_raw(&document)?))
}

/// The servers one notary request may ask about.
const NOTARY_MAX_SERVERS: usize = 100;

/// The notary: our own keys, and what we hold of other servers' keys. It is unauthenticated, so
/// it serves only servers we already know (refreshing their keys when stale): a server name it
/// is merely given never makes us connect anywhere.
async fn notary(
    services: &Services,
    server: &ServerName,
) -> Result<Vec<Raw<ruma::api::federation::discovery::ServerSigningKeys>>> {
    if server == services.federation.server_name() {
        return Ok(vec![document_raw(&services.server_keys.key_document()?)?]);
    }
    if !services.federation.allowed(server) {
        return Ok(Vec::new());
    }
    let fed = &services.federation;
    let Some(known) = fed.keys.known(server)? else { return Ok(Vec::new()) };
    let set = match fed.keys.keys_of(&fed.client, &fed.own, server, None).await {
        Ok(set) => Some(set),
        Err(_) => Some(known),
    };
    let Some(document) = set.and_then(|s| s.document) else { return Ok(Vec::new()) };
    let mut object: CanonicalJsonObject =
        serde_json::from_value(document).map_err(|e| Error::Internal(e.to_string()))?;
    services.server_keys.sign_json(&mut object)?;
    Ok(vec![document_raw(&object)?])
}

pub async fn key_query(
    services: Arc<Services>,
    request: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    let mut keys = Vec::new();
    if request.body.server_keys.len() > NOTARY_MAX_SERVERS {
        return Err(Error::TooLarge(format!("at most {NOTARY_MAX_SERVERS} servers per key query")));
    }
    for server in request.body.server_keys.keys() {
        keys.extend(notary(&services, server).await?);
    }
    Ok(get_remote_server_keys_batch::v2::Response::new(keys))
}

pub async fn key_query_one(
    services: Arc<Services>,
    request: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<get_remote_server_keys::v2::Response> {
    Ok(get_remote_server_keys::v2::Response::new(notary(&services, &request.body.server_name).await?))
}

pub async fn send(
    services: Arc<Services>,
    request: Ruma<send_transaction_message::v1::Request>,
) -> Result<send_transaction_message::v1::Response> {
    let origin = origin(&request)?;
    if request.body.origin != origin {
        return Err(Error::forbidden("the transaction's origin is not the signing server"));
    }
    let edus: Vec<serde_json::Value> =
        request.body.edus.iter().filter_map(|e| serde_json::from_str(e.json().get()).ok()).collect();
    let results =
        receive::transaction(&services, &origin, request.body.transaction_id.as_str(), &request.body.pdus, &edus)
            .await?;
    Ok(send_transaction_message::v1::Response::new(results))
}

/// A user of the origin server, as a membership template names them.
fn user_of_origin(origin: &ServerName, user: &UserId) -> Result<()> {
    if user.server_name() != origin {
        return Err(Error::forbidden("you may only act for users of your own server"));
    }
    Ok(())
}

pub async fn make_join(
    services: Arc<Services>,
    request: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    user_of_origin(&origin, &body.user_id)?;
    // An invite we are sending them may have reached them before we appended it.
    services.federation.invites_in_flight.wait(&body.room_id, &body.user_id, std::time::Duration::from_secs(10)).await;
    let record = services.rooms.room(&body.room_id)?.ok_or_else(|| Error::not_found("unknown room"))?;
    services.rooms.check_not_blocked(&body.room_id)?;
    if !receive::acl_allows(&services, &body.room_id, &origin) {
        return Err(Error::forbidden("the room's server ACL denies your server"));
    }
    let versions = if body.ver.is_empty() { vec![ruma::RoomVersionId::V1] } else { body.ver.clone() };
    if !versions.contains(&record.version) {
        return Err(Error::IncompatibleRoomVersion(record.version.to_string()));
    }
    let mut content = serde_json::json!({ "membership": "join" });
    // A restricted room: one of our members vouches for the join when the user is in a room the
    // join rules allow (which we know of only for rooms we share with their server).
    if let Some(authoriser) = services.rooms.restricted_join_authoriser(&body.room_id, &body.user_id)? {
        content["join_authorised_via_users_server"] = serde_json::json!(authoriser);
    }
    let event = NewEvent::state(StateEventType::RoomMember, body.user_id.as_str(), content);
    let (version, template) = services.rooms.template(&body.room_id, &body.user_id, event).await?;
    let mut response = prepare_join_event::v1::Response::new(
        serde_json::value::to_raw_value(&template).map_err(|e| Error::Internal(e.to_string()))?,
    );
    response.room_version = Some(version);
    Ok(response)
}

/// Checks and appends a membership event another server built from our template.
async fn take_membership(
    services: &Arc<Services>,
    origin: &ServerName,
    room: &RoomId,
    event_id: &EventId,
    pdu: &RawValue,
    membership: &str,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
    let record = services.rooms.room(room)?.ok_or_else(|| Error::not_found("unknown room"))?;
    if !receive::acl_allows(services, room, origin) {
        return Err(Error::forbidden("the room's server ACL denies your server"));
    }
    let mut object = canonical_object(pdu)?;
    if membership == "join" && authorised_by_us(&services.federation, &object) {
        // Our member vouches for this restricted join with our signature: checked again now, as
        // the joining server may send a join it never asked a template for.
        let joiner = object.get("state_key").and_then(|s| s.as_str()).and_then(|s| UserId::parse(s).ok());
        let (Some(joiner), Some(authoriser)) = (joiner, join_authoriser(&object)) else {
            return Err(Error::BadJson("the join names no joiner".into()));
        };
        user_of_origin(origin, &joiner)?;
        services.rooms.check_join_authoriser(room, &joiner, &authoriser)?;
        let rules = record.version.rules().ok_or_else(|| Error::IncompatibleRoomVersion(record.version.to_string()))?;
        ruma::signatures::sign_event(
            services.federation.server_name().as_str(),
            services.server_keys.keypair(),
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| Error::BadJson(format!("the join cannot be signed: {e}")))?;
    }
    let (id, object) = services.federation.verify_pdu(&record.version, object).await?;
    if id != event_id {
        return Err(Error::BadJson(format!("the event id is {id}, not {event_id}")));
    }
    let sender = object.get("sender").and_then(|s| s.as_str()).and_then(|s| UserId::parse(s).ok());
    let state_key = object.get("state_key").and_then(|s| s.as_str());
    let Some(sender) = sender else { return Err(Error::BadJson("the event has no sender".into())) };
    user_of_origin(origin, &sender)?;
    let content_membership = match object.get("content") {
        Some(ruma::CanonicalJsonValue::Object(c)) => c.get("membership").and_then(|m| m.as_str()).map(str::to_owned),
        _ => None,
    };
    if object.get("type").and_then(|t| t.as_str()) != Some("m.room.member")
        || state_key != Some(sender.as_str())
        || content_membership.as_deref() != Some(membership)
        || object.get("room_id").and_then(|r| r.as_str()) != Some(room.as_str())
    {
        return Err(Error::BadJson(format!("not a {membership} of the sender in this room")));
    }
    match services.rooms.append_remote(room, &id, &object, None).await? {
        crate::rooms::remote::Accepted::Rejected(reason) | crate::rooms::remote::Accepted::SoftFailed(reason) => {
            return Err(Error::forbidden(reason));
        }
        _ => {}
    }
    // Other servers in the room hear of it from us, the resident server it came through.
    let others: Vec<OwnedServerName> =
        receive::servers_in_room(services, room)?.into_iter().filter(|s| s != origin).collect();
    services
        .federation
        .sender
        .queue_pdu(&others, serde_json::to_value(&object).map_err(|e| Error::Internal(e.to_string()))?)?;
    if membership == "join" {
        send_concurrent_events(services, room, &id, origin)?;
    }
    Ok((id, object))
}

/// Events appended here between the joining server's `make_join` and its `send_join` are
/// neither in the join's history nor were they sent to it (it was not in the room yet): the
/// room's other forward extremities go to it now, and it fetches what lies behind them.
fn send_concurrent_events(services: &Services, room: &RoomId, join: &EventId, origin: &ServerName) -> Result<()> {
    let Some(crate::db::codec::Json(record)) = services.db.tables.rooms.roomid_room.get(&room.to_owned())? else {
        return Ok(());
    };
    for extremity in record.extremities.iter().filter(|e| **e != *join) {
        // Only what the joining server may see of the room (its history visibility).
        if !Federation::server_may_see(services, origin, room, extremity)? {
            continue;
        }
        if let Some(json) = services.rooms.pdu_json_for_peers(extremity)? {
            let pdu: serde_json::Value = serde_json::from_slice(&json).map_err(|e| Error::Internal(e.to_string()))?;
            services.federation.sender.queue_pdu(&[origin.to_owned()], pdu)?;
        }
    }
    Ok(())
}

/// The user a join names in `join_authorised_via_users_server`.
fn join_authoriser(object: &CanonicalJsonObject) -> Option<ruma::OwnedUserId> {
    let Some(ruma::CanonicalJsonValue::Object(content)) = object.get("content") else { return None };
    content.get("join_authorised_via_users_server").and_then(|u| u.as_str()).and_then(|u| UserId::parse(u).ok())
}

/// Whether a join names one of our users in `join_authorised_via_users_server`.
fn authorised_by_us(fed: &Federation, object: &CanonicalJsonObject) -> bool {
    join_authoriser(object).is_some_and(|u| u.server_name() == fed.server_name())
}

pub async fn send_join(
    services: Arc<Services>,
    request: Ruma<create_join_event::v2::Request>,
) -> Result<create_join_event::v2::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    let (id, joined) = take_membership(&services, &origin, &body.room_id, &body.event_id, &body.pdu, "join").await?;
    let state = services.rooms.state_before_event(&id)?.unwrap_or_default();
    let chain = services.rooms.auth_chain(&state)?;
    let mut room_state = create_join_event::v2::RoomState::new();
    room_state.state = state.iter().filter_map(|e| pdu_raw(&services, e).ok().flatten()).collect();
    room_state.auth_chain = chain.iter().filter_map(|e| pdu_raw(&services, e).ok().flatten()).collect();
    let mut servers = receive::servers_in_room(&services, &body.room_id)?;
    servers.push(services.federation.server_name().to_owned());
    room_state.servers_in_room = Some(servers.into_iter().map(|s| s.to_string()).collect());
    if authorised_by_us(&services.federation, &joined) {
        room_state.event = Some(serde_json::value::to_raw_value(&joined).map_err(|e| Error::Internal(e.to_string()))?);
    }
    Ok(create_join_event::v2::Response::new(room_state))
}

/// `GET /make_knock`: a knock template, for room versions that know knocking (7 and later).
pub async fn make_knock(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::membership::prepare_knock_event::v1::Request>,
) -> Result<ruma::api::federation::membership::prepare_knock_event::v1::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    user_of_origin(&origin, &body.user_id)?;
    let record = services.rooms.room(&body.room_id)?.ok_or_else(|| Error::not_found("unknown room"))?;
    if !receive::acl_allows(&services, &body.room_id, &origin) {
        return Err(Error::forbidden("the room's server ACL denies your server"));
    }
    let knocks = record.version.rules().is_some_and(|r| r.authorization.knocking);
    if !knocks || !body.ver.contains(&record.version) {
        return Err(Error::IncompatibleRoomVersion(record.version.to_string()));
    }
    let event = NewEvent::state(
        StateEventType::RoomMember,
        body.user_id.as_str(),
        serde_json::json!({ "membership": "knock" }),
    );
    let (version, template) = services.rooms.template(&body.room_id, &body.user_id, event).await?;
    Ok(ruma::api::federation::membership::prepare_knock_event::v1::Response::new(
        version,
        serde_json::value::to_raw_value(&template).map_err(|e| Error::Internal(e.to_string()))?,
    ))
}

/// `PUT /send_knock`: the knock enters the room; the knocker's server gets the room's stripped
/// state to show it.
pub async fn send_knock(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::membership::create_knock_event::v1::Request>,
) -> Result<ruma::api::federation::membership::create_knock_event::v1::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    take_membership(&services, &origin, &body.room_id, &body.event_id, &body.pdu, "knock").await?;
    let state = crate::federation::membership::stripped_state_pdus(&services, &body.room_id, None)?;
    Ok(ruma::api::federation::membership::create_knock_event::v1::Response::new(state))
}

pub async fn make_leave(
    services: Arc<Services>,
    request: Ruma<prepare_leave_event::v1::Request>,
) -> Result<prepare_leave_event::v1::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    user_of_origin(&origin, &body.user_id)?;
    if services.rooms.exists(&body.room_id)? && !receive::acl_allows(&services, &body.room_id, &origin) {
        return Err(Error::forbidden("the room's server ACL denies your server"));
    }
    let event = NewEvent::state(
        StateEventType::RoomMember,
        body.user_id.as_str(),
        serde_json::json!({ "membership": "leave" }),
    );
    let (version, template) = services.rooms.template(&body.room_id, &body.user_id, event).await?;
    Ok(prepare_leave_event::v1::Response::new(
        Some(version),
        serde_json::value::to_raw_value(&template).map_err(|e| Error::Internal(e.to_string()))?,
    ))
}

pub async fn send_leave(
    services: Arc<Services>,
    request: Ruma<create_leave_event::v2::Request>,
) -> Result<create_leave_event::v2::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    take_membership(&services, &origin, &body.room_id, &body.event_id, &body.pdu, "leave").await?;
    Ok(create_leave_event::v2::Response::new())
}

pub async fn invite(
    services: Arc<Services>,
    request: Ruma<create_invite::v2::Request>,
) -> Result<create_invite::v2::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    services.rooms.check_not_blocked(&body.room_id)?;
    if !supported_versions().contains(&body.room_version) {
        return Err(Error::IncompatibleRoomVersion(body.room_version.to_string()));
    }
    let object = canonical_object(&body.event)?;
    let (id, mut object) = services.federation.verify_pdu(&body.room_version, object).await?;
    if id != body.event_id {
        return Err(Error::BadJson(format!("the event id is {id}, not {}", body.event_id)));
    }
    let sender = object.get("sender").and_then(|s| s.as_str()).and_then(|s| UserId::parse(s).ok());
    let invitee = object.get("state_key").and_then(|s| s.as_str()).and_then(|s| UserId::parse(s).ok());
    let (Some(sender), Some(invitee)) = (sender, invitee) else {
        return Err(Error::BadJson("an invite names its sender and invitee".into()));
    };
    user_of_origin(&origin, &sender)?;
    // We sign what we are given: only an invite into the room the path names, nothing else.
    let membership = match object.get("content") {
        Some(ruma::CanonicalJsonValue::Object(c)) => c.get("membership").and_then(|m| m.as_str()),
        _ => None,
    };
    if object.get("type").and_then(|t| t.as_str()) != Some("m.room.member")
        || membership != Some("invite")
        || object.get("room_id").and_then(|r| r.as_str()) != Some(body.room_id.as_str())
    {
        return Err(Error::BadJson("not an invite into this room".into()));
    }
    if services.rooms.exists(&body.room_id)? && !receive::acl_allows(&services, &body.room_id, &origin) {
        return Err(Error::forbidden("the room's server ACL denies your server"));
    }
    if !services.users.is_local(&invitee) || !services.rooms.profiles_user_exists(&invitee)? {
        return Err(Error::not_found(format!("{invitee} is not a user of this server")));
    }
    let rules =
        body.room_version.rules().ok_or_else(|| Error::IncompatibleRoomVersion(body.room_version.to_string()))?;
    ruma::signatures::sign_event(
        services.federation.server_name().as_str(),
        services.server_keys.keypair(),
        &mut object,
        &rules.redaction,
    )
    .map_err(|e| Error::Internal(format!("signing failed: {e}")))?;
    if !services.rooms.exists(&body.room_id)?
        || !services
            .rooms
            .members(&body.room_id)?
            .iter()
            .any(|(u, m)| services.users.is_local(u) && m.membership == "join")
    {
        // A room we are not in: the invitee's sync shows the invite with the state it carried.
        let mut stored = object.clone();
        let stripped: Vec<serde_json::Value> =
            body.invite_room_state.iter().filter_map(|s| serde_json::to_value(s).ok()).collect();
        let mut unsigned = CanonicalJsonObject::new();
        if let Ok(value) = ruma::CanonicalJsonValue::try_from(serde_json::Value::Array(stripped)) {
            unsigned.insert("invite_room_state".into(), value);
        }
        stored.insert("unsigned".into(), ruma::CanonicalJsonValue::Object(unsigned));
        services.rooms.record_remote_membership(&body.room_id, &invitee, &id, &stored, "invite").await?;
        crate::appservice::sender::queue_remote_invite(&services, &body.room_id, &invitee, &id)?;
    }
    Ok(create_invite::v2::Response::new(
        serde_json::value::to_raw_value(&object).map_err(|e| Error::Internal(e.to_string()))?,
    ))
}

/// `PUT /3pid/onbind`: an address bound to a user of ours had third-party invites
/// (`federation::threepid`).
pub async fn third_party_bound(
    services: Arc<Services>,
    request: Ruma<bind_callback::v1::Request>,
) -> Result<bind_callback::v1::Response> {
    crate::federation::threepid::on_bind_callback(&services, request.body).await?;
    Ok(bind_callback::v1::Response::new())
}

/// `PUT /exchange_third_party_invite/{roomId}`: a user of the origin holds the signed token of
/// an invite one of our users sent (`federation::threepid`).
pub async fn exchange_third_party_invite(
    services: Arc<Services>,
    request: Ruma<exchange_invite::v1::Request>,
) -> Result<exchange_invite::v1::Response> {
    let origin = origin(&request)?;
    crate::federation::threepid::on_exchange(&services, &origin, request.body).await?;
    Ok(exchange_invite::v1::Response::new())
}

pub async fn backfill(
    services: Arc<Services>,
    request: Ruma<get_backfill::v1::Request>,
) -> Result<get_backfill::v1::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    require_in_room(&services, &origin, &body.room_id)?;
    let limit = u64::from(body.limit).clamp(1, 100) as usize;
    // Only events of the room named in the path may start the walk: an id of another room would
    // page that room's history under this room's check.
    let start = body
        .v
        .iter()
        .filter_map(|id| services.rooms.meta(id).ok().flatten())
        .filter(|m| m.room_id == body.room_id)
        .map(|m| m.pos)
        .max();
    let mut pdus = Vec::new();
    if let Some(start) = start {
        let window = services.rooms.server_window(&origin, &body.room_id)?;
        for (pos, id) in services.rooms.timeline_before(&body.room_id, start + 1, limit * 4)? {
            if pdus.len() >= limit {
                break;
            }
            if window.may_see(pos) {
                if let Some(raw) = pdu_raw(&services, &id)? {
                    pdus.push(raw);
                }
            }
        }
    }
    Ok(get_backfill::v1::Response::new(
        services.federation.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
        pdus,
    ))
}

pub async fn event(services: Arc<Services>, request: Ruma<get_event::v1::Request>) -> Result<get_event::v1::Response> {
    let origin = origin(&request)?;
    let id = &request.body.event_id;
    let room = services.rooms.room_of_event(id)?.ok_or_else(|| Error::not_found("unknown event"))?;
    require_in_room(&services, &origin, &room)?;
    if !Federation::server_may_see(&services, &origin, &room, id)? {
        return Err(Error::forbidden("your server may not see this event"));
    }
    let pdu = pdu_raw(&services, id)?.ok_or_else(|| Error::not_found("unknown event"))?;
    Ok(get_event::v1::Response::new(
        services.federation.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
        pdu,
    ))
}

fn state_at(services: &Services, origin: &ServerName, room: &RoomId, event: &EventId) -> Result<Vec<OwnedEventId>> {
    require_in_room(services, origin, room)?;
    if services.rooms.room_of_event(event)?.as_deref() != Some(room) {
        return Err(Error::not_found("unknown event in this room"));
    }
    if !Federation::server_may_see(services, origin, room, event)? {
        return Err(Error::forbidden("your server may not see this event"));
    }
    services.rooms.state_before_event(event)?.ok_or_else(|| Error::not_found("no state is known at this event"))
}

pub async fn state_ids(
    services: Arc<Services>,
    request: Ruma<get_room_state_ids::v1::Request>,
) -> Result<get_room_state_ids::v1::Response> {
    let origin = origin(&request)?;
    let state = state_at(&services, &origin, &request.body.room_id, &request.body.event_id)?;
    let chain = services.rooms.auth_chain(&state)?;
    Ok(get_room_state_ids::v1::Response::new(chain.into_iter().collect(), state))
}

pub async fn state(
    services: Arc<Services>,
    request: Ruma<get_room_state::v1::Request>,
) -> Result<get_room_state::v1::Response> {
    let origin = origin(&request)?;
    let state = state_at(&services, &origin, &request.body.room_id, &request.body.event_id)?;
    let chain = services.rooms.auth_chain(&state)?;
    let to_raw = |ids: &mut dyn Iterator<Item = &OwnedEventId>| -> Vec<Box<RawValue>> {
        ids.filter_map(|id| pdu_raw(&services, id).ok().flatten()).collect()
    };
    Ok(get_room_state::v1::Response::new(to_raw(&mut chain.iter()), to_raw(&mut state.iter())))
}

pub async fn event_auth(
    services: Arc<Services>,
    request: Ruma<get_event_authorization::v1::Request>,
) -> Result<get_event_authorization::v1::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    require_in_room(&services, &origin, &body.room_id)?;
    if services.rooms.room_of_event(&body.event_id)?.as_deref() != Some(&*body.room_id) {
        return Err(Error::not_found("unknown event in this room"));
    }
    let chain = services.rooms.auth_chain(std::slice::from_ref(&body.event_id))?;
    Ok(get_event_authorization::v1::Response::new(
        chain.iter().filter_map(|id| pdu_raw(&services, id).ok().flatten()).collect(),
    ))
}

pub async fn missing_events(
    services: Arc<Services>,
    request: Ruma<get_missing_events::v1::Request>,
) -> Result<get_missing_events::v1::Response> {
    let origin = origin(&request)?;
    let body = request.body;
    require_in_room(&services, &origin, &body.room_id)?;
    let limit = u64::from(body.limit).clamp(1, 100) as usize;
    let earliest: std::collections::HashSet<&OwnedEventId> = body.earliest_events.iter().collect();
    let window = services.rooms.server_window(&origin, &body.room_id)?;
    // Walk back from the latest events through prev events, stopping at what the asker has.
    let mut seen = std::collections::HashSet::new();
    let mut queue: std::collections::VecDeque<OwnedEventId> = Default::default();
    for id in &body.latest_events {
        if let Some(pdu) = services.rooms.pdu(id)? {
            queue.extend(pdu.prev_events);
        }
    }
    let mut found: Vec<(u64, OwnedEventId)> = Vec::new();
    while let Some(id) = queue.pop_front() {
        if found.len() >= limit || earliest.contains(&id) || !seen.insert(id.clone()) {
            continue;
        }
        let Some(meta) = services.rooms.meta(&id)? else { continue };
        if meta.room_id != body.room_id {
            continue;
        }
        let Some(pdu) = services.rooms.pdu(&id)? else { continue };
        if u64::from(pdu.depth) < u64::from(body.min_depth) {
            continue;
        }
        queue.extend(pdu.prev_events.iter().cloned());
        if window.may_see(meta.pos) {
            found.push((meta.pos, id));
        }
    }
    found.sort();
    let events = found.iter().filter_map(|(_, id)| pdu_raw(&services, id).ok().flatten()).collect();
    Ok(get_missing_events::v1::Response::new(events))
}

pub async fn query_profile(
    services: Arc<Services>,
    request: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    let user = &request.body.user_id;
    if !services.users.is_local(user) || !services.rooms.profiles_user_exists(user)? {
        return Err(Error::not_found("no such user"));
    }
    let profile = services.profiles.get(user)?;
    let fields: BTreeMap<String, serde_json::Value> = match &request.body.field {
        Some(field) => profile.into_iter().filter(|(k, _)| k == field.as_str()).collect(),
        None => profile,
    };
    Ok(fields.into_iter().collect())
}

/// `GET /query/{queryType}` for the query types beyond the spec's: `user_info` (Tchap's: whether
/// one of our users is expired or deactivated) and `org.hemicycle.email_lookup` (which agent of
/// ours an address belongs to, for another node's directory search). Other types are unknown here (`404 M_NOT_FOUND`,
/// as Synapse answers).
pub async fn query_custom(
    services: Arc<Services>,
    request: Ruma<get_custom_information::v1::Request>,
) -> Result<get_custom_information::v1::Response> {
    let body = &request.body;
    if body.query_type == crate::users::email_lookup::QUERY {
        let origin = origin(&request)?;
        let found = crate::users::email_lookup::answer(&services, &origin, &body.params)?;
        return Ok(get_custom_information::v1::Response::new(found));
    }
    if body.query_type != "user_info" {
        return Err(Error::not_found(format!("no handler for query type {:?}", body.query_type)));
    }
    let user = body.params.get("user_id").ok_or_else(|| Error::MissingParam("user_id is required".into()))?;
    let user = ruma::UserId::parse(user).map_err(|_| Error::invalid_param("user_id is not a user id"))?;
    if !services.users.is_local(&user) {
        return Err(Error::invalid_param("the user is not of this server"));
    }
    Ok(get_custom_information::v1::Response::new(crate::users::account_validity::user_info(&services, &user)?))
}

pub async fn query_directory(
    services: Arc<Services>,
    request: Ruma<get_room_information::v1::Request>,
) -> Result<get_room_information::v1::Response> {
    let alias = &request.body.room_alias;
    if alias.server_name() != services.federation.server_name() {
        return Err(Error::not_found("the alias is not of this server"));
    }
    let record = services.rooms.resolve_alias(alias)?.ok_or_else(|| Error::not_found("unknown room alias"))?;
    let mut servers = vec![services.federation.server_name().to_owned()];
    servers.extend(receive::servers_in_room(&services, &record.room_id)?);
    Ok(get_room_information::v1::Response::new(record.room_id, servers))
}

/// A requester standing for another server in key queries (it sees no private signatures).
fn to_raw<T>(v: &serde_json::Value) -> Raw<T> {
    Raw::from_json(serde_json::value::to_raw_value(v).expect("JSON values serialize"))
}

fn server_requester(origin: &ServerName) -> Result<ruma::OwnedUserId> {
    UserId::parse(format!("@_federation:{origin}")).map_err(|e| Error::Internal(e.to_string()))
}

/// Device keys as other servers get them: without the device's name unless
/// `federation.device_names` says otherwise.
fn for_servers(services: &Services, mut result: crate::keys::QueryResult) -> crate::keys::QueryResult {
    if !services.config.federation.device_names {
        for devices in result.device_keys.values_mut() {
            for keys in devices.values_mut() {
                if let Some(unsigned) = keys.get_mut("unsigned").and_then(|u| u.as_object_mut()) {
                    unsigned.remove("device_display_name");
                }
            }
        }
    }
    result
}

pub async fn user_keys_query(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::keys::get_keys::v1::Request>,
) -> Result<ruma::api::federation::keys::get_keys::v1::Response> {
    let origin = origin(&request)?;
    let wanted: BTreeMap<ruma::OwnedUserId, Vec<ruma::OwnedDeviceId>> =
        request.body.device_keys.into_iter().filter(|(u, _)| services.users.is_local(u)).collect();
    let result = for_servers(&services, services.keys.query(&services.users, &server_requester(&origin)?, &wanted)?);
    let mut response = ruma::api::federation::keys::get_keys::v1::Response::new(BTreeMap::new());
    for (user, devices) in result.device_keys {
        response.device_keys.insert(user, devices.iter().map(|(d, k)| (d.clone(), to_raw(k))).collect());
    }
    for (user, cross) in result.cross_signing {
        if let Some(k) = &cross.master {
            response.master_keys.insert(user.clone(), to_raw(k));
        }
        if let Some(k) = &cross.self_signing {
            response.self_signing_keys.insert(user.clone(), to_raw(k));
        }
    }
    Ok(response)
}

pub async fn user_keys_claim(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::keys::claim_keys::v1::Request>,
) -> Result<ruma::api::federation::keys::claim_keys::v1::Response> {
    origin(&request)?;
    let one_time_keys = super::client::keys::claim_local(&services, &request.body.one_time_keys).await?;
    Ok(ruma::api::federation::keys::claim_keys::v1::Response::new(one_time_keys))
}

/// `/user/devices/{userId}`: the whole device list of a local user, which other servers fetch
/// when an `m.device_list_update` does not chain onto what they know (ours never does: see
/// `federation::sender`), so they always hold the current list.
pub async fn user_devices(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::device::get_devices::v1::Request>,
) -> Result<ruma::api::federation::device::get_devices::v1::Response> {
    use ruma::api::federation::device::get_devices::v1::{Response, UserDevice};
    let origin = origin(&request)?;
    let user = request.body.user_id;
    if !services.users.is_local(&user) {
        return Err(Error::invalid_param(format!("{user} is not a user of this server")));
    }
    let wanted = BTreeMap::from([(user.clone(), Vec::new())]);
    let mut result =
        for_servers(&services, services.keys.query(&services.users, &server_requester(&origin)?, &wanted)?);
    let head = *services.rooms.subscribe().borrow();
    let mut response = Response::new(user.clone(), ruma::UInt::new_saturating(head));
    for (device_id, keys) in result.device_keys.remove(&user).unwrap_or_default() {
        let name = keys["unsigned"]["device_display_name"].as_str().map(str::to_owned);
        let mut device = UserDevice::new(device_id, to_raw(&keys));
        device.device_display_name = name;
        response.devices.push(device);
    }
    if let Some(cross) = result.cross_signing.remove(&user) {
        response.master_key = cross.master.as_ref().map(to_raw);
        response.self_signing_key = cross.self_signing.as_ref().map(to_raw);
    }
    Ok(response)
}

/// Our media as another server receives it: the metadata part, then the file (read into the
/// answer: bounded by `media.max_upload_size`).
async fn media_answer(
    content: crate::media::Content,
) -> Result<ruma::api::federation::authenticated_media::FileOrLocation> {
    use ruma::{
        api::federation::authenticated_media::{Content, FileOrLocation},
        http_headers::{ContentDisposition, ContentDispositionType},
    };
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::with_capacity(content.size as usize);
    let mut file = content.file;
    file.read_to_end(&mut bytes).await.map_err(|e| Error::Internal(format!("reading media failed: {e}")))?;
    // The receiving server decides how it serves the file; attachment is the safe default.
    let disposition = ContentDisposition::new(ContentDispositionType::Attachment).with_filename(content.filename);
    let content_type = content.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    Ok(FileOrLocation::File(Content::new(bytes, content_type, disposition)))
}

/// `GET /_matrix/federation/v1/media/download/{mediaId}`: media uploaded here.
pub async fn media_download(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::authenticated_media::get_content::v1::Request>,
) -> Result<ruma::api::federation::authenticated_media::get_content::v1::Response> {
    use ruma::api::federation::authenticated_media::{get_content::v1::Response, ContentMetadata};
    let r = request.body;
    let content = services.media.content(services.federation.server_name(), &r.media_id, r.timeout_ms).await?;
    Ok(Response::new(ContentMetadata::new(), media_answer(content).await?))
}

/// `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`: a thumbnail of media uploaded here.
pub async fn media_thumbnail(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::authenticated_media::get_content_thumbnail::v1::Request>,
) -> Result<ruma::api::federation::authenticated_media::get_content_thumbnail::v1::Response> {
    use ruma::api::federation::authenticated_media::{get_content_thumbnail::v1::Response, ContentMetadata};
    let r = request.body;
    let (width, height) = super::client::media::thumbnail_size(r.width, r.height)?;
    let method = super::client::media::thumbnail_method(r.method)?;
    let own = services.federation.server_name();
    let content = services.media.thumbnail(own, &r.media_id, (width, height), method, r.timeout_ms).await?;
    Ok(Response::new(ContentMetadata::new(), media_answer(content).await?))
}

/// Our public directory is served to other servers only when `federation.public_rooms` says so.
fn public_rooms_served(services: &Services) -> Result<()> {
    if services.config.federation.public_rooms {
        Ok(())
    } else {
        Err(Error::forbidden("this server does not publish its room directory over federation"))
    }
}

/// `GET /publicRooms`: our public directory for another server's users.
pub async fn public_rooms(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::directory::get_public_rooms::v1::Request>,
) -> Result<ruma::api::federation::directory::get_public_rooms::v1::Response> {
    public_rooms_served(&services)?;
    let b = &request.body;
    let page = super::client::directory::page(&services, None, b.since.as_deref(), b.limit, &b.room_network)?;
    let mut response = ruma::api::federation::directory::get_public_rooms::v1::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next;
    response.prev_batch = page.prev;
    response.total_room_count_estimate = ruma::UInt::new(page.total);
    Ok(response)
}

/// `POST /publicRooms`: the same with a search term.
pub async fn public_rooms_filtered(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::directory::get_public_rooms_filtered::v1::Request>,
) -> Result<ruma::api::federation::directory::get_public_rooms_filtered::v1::Response> {
    public_rooms_served(&services)?;
    let b = &request.body;
    let search = b.filter.generic_search_term.as_deref();
    let page = super::client::directory::page(&services, search, b.since.as_deref(), b.limit, &b.room_network)?;
    let mut response = ruma::api::federation::directory::get_public_rooms_filtered::v1::Response::new();
    response.chunk = page.chunk;
    response.next_batch = page.next;
    response.prev_batch = page.prev;
    response.total_room_count_estimate = ruma::UInt::new(page.total);
    Ok(response)
}

/// `GET /hierarchy/{roomId}`: a space we hold and the summaries of its children, as the asking
/// server's users may see them.
pub async fn hierarchy(
    services: Arc<Services>,
    request: Ruma<ruma::api::federation::space::get_hierarchy::v1::Request>,
) -> Result<ruma::api::federation::space::get_hierarchy::v1::Response> {
    use ruma::api::federation::space::{get_hierarchy::v1::Response, SpaceHierarchyParentSummary};
    let origin = origin(&request)?;
    let b = request.body;
    let answer = crate::spaces::serve(&services, &origin, &b.room_id, b.suggested_only)?;
    let bad = |e: serde_json::Error| Error::Internal(format!("a room summary: {e}"));
    let room: SpaceHierarchyParentSummary = serde_json::from_value(answer["room"].clone()).map_err(bad)?;
    let mut response = Response::new(room);
    response.children = serde_json::from_value(answer["children"].clone()).map_err(bad)?;
    response.inaccessible_children = serde_json::from_value(answer["inaccessible_children"].clone()).map_err(bad)?;
    Ok(response)
}
