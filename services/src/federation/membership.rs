//! Membership across servers, from our users' side: joining a room this server is not in
//! (`make_join` / `send_join` through each candidate server until one works), inviting a user of
//! another server (`/invite` v2), and leaving a room we only know by an invite (`make_leave` /
//! `send_leave`).

use std::sync::Arc;

use ruma::{
    api::federation::{
        backfill::get_backfill,
        membership::{
            create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
            prepare_knock_event, prepare_leave_event,
        },
    },
    canonical_json::CanonicalJsonValue,
    signatures::hash_and_sign_event,
    CanonicalJsonObject, OwnedEventId, OwnedServerName, RoomId, RoomVersionId, ServerName, UserId,
};
use serde_json::{json, Value};

use super::{canonical_object, event_id_of};
use crate::{
    error::{Error, Result},
    services::Services,
};

/// Room versions we can join.
pub fn supported_versions() -> Vec<RoomVersionId> {
    use RoomVersionId as V;
    vec![V::V1, V::V2, V::V3, V::V4, V::V5, V::V6, V::V7, V::V8, V::V9, V::V10, V::V11, V::V12]
}

/// Events of history fetched with a join, so `/messages` reaches back before it.
const JOIN_HISTORY: usize = 500;

/// The event ids of a `prev_events` list (plain ids, or `[id, hashes]` pairs of room versions 1–2).
pub(super) fn event_refs(value: Option<&CanonicalJsonValue>) -> Vec<OwnedEventId> {
    let Some(CanonicalJsonValue::Array(items)) = value else { return Vec::new() };
    items
        .iter()
        .filter_map(|i| match i {
            CanonicalJsonValue::String(s) => OwnedEventId::try_from(s.as_str()).ok(),
            CanonicalJsonValue::Array(pair) => pair.first()?.as_str().and_then(|s| OwnedEventId::try_from(s).ok()),
            _ => None,
        })
        .collect()
}

/// Joins a room of another server through the first of `servers` that lets us in.
pub async fn join_remote(
    services: &Arc<Services>,
    room: &RoomId,
    user: &UserId,
    servers: &[OwnedServerName],
    reason: Option<String>,
) -> Result<OwnedEventId> {
    super::receive::start_joining(services, room);
    let joined = join_through(services, room, user, servers, reason).await;
    super::receive::end_joining(services, room, joined.is_ok()).await;
    if joined.is_ok() {
        if let Err(error) = services.rooms.refresh_profile_in(room, user).await {
            tracing::warn!(%user, %room, %error, "could not bring the new member event to the current profile");
        }
    }
    joined
}

async fn join_through(
    services: &Arc<Services>,
    room: &RoomId,
    user: &UserId,
    servers: &[OwnedServerName],
    reason: Option<String>,
) -> Result<OwnedEventId> {
    let mut last = Error::not_found("no server of the room to join through is known");
    for server in candidates(services, room, servers) {
        if !services.federation.allowed(&server) {
            last = Error::forbidden(format!("this server does not federate with {server} (federation.allow)"));
            continue;
        }
        match try_join(services, &server, room, user, reason.clone()).await {
            Ok(id) => return Ok(id),
            Err(error) => {
                tracing::info!(%server, %room, %error, "joining through this server failed");
                last = error;
            }
        }
    }
    Err(last)
}

/// The top-level keys of a membership template we keep: what a PDU needs. Anything else a
/// resident server puts there would go out under our signature.
const TEMPLATE_KEYS: [&str; 7] = ["auth_events", "prev_events", "depth", "room_id", "sender", "state_key", "type"];

/// Fills in and signs a template a resident server handed out for one of our users. The resident
/// server may be hostile: we sign only an `m.room.member` event of the room we asked about, for
/// our user, with the membership we asked for and a content we write ourselves — never a
/// template's own content (a leave of another room, a join with a forged authoriser).
fn sign_template(
    services: &Services,
    version: &RoomVersionId,
    room: &RoomId,
    template: CanonicalJsonObject,
    user: &UserId,
    membership: &str,
    reason: Option<String>,
) -> Result<(OwnedEventId, CanonicalJsonObject)> {
    let rules = version
        .rules()
        .ok_or_else(|| Error::UnsupportedRoomVersion(format!("room version {version} is not supported")))?;
    let field = |key: &str| template.get(key).and_then(|s| s.as_str());
    if field("sender") != Some(user.as_str()) || field("state_key") != Some(user.as_str()) {
        return Err(Error::RemoteUnreachable("the resident server's template is for another user".into()));
    }
    if field("type") != Some("m.room.member") || field("room_id") != Some(room.as_str()) {
        return Err(Error::RemoteUnreachable("the resident server's template is not a membership of this room".into()));
    }
    let template_content = match template.get("content") {
        Some(CanonicalJsonValue::Object(c)) => c.clone(),
        _ => CanonicalJsonObject::new(),
    };
    if template_content.get("membership").and_then(|m| m.as_str()).is_some_and(|m| m != membership) {
        return Err(Error::RemoteUnreachable(format!("the resident server's template is not a {membership}")));
    }
    let mut event: CanonicalJsonObject =
        template.into_iter().filter(|(key, _)| TEMPLATE_KEYS.contains(&key.as_str())).collect();
    event.insert(
        "origin_server_ts".into(),
        CanonicalJsonValue::Integer(ruma::Int::new_saturating(crate::time::now_ms() as i64)),
    );
    event.insert("origin".into(), CanonicalJsonValue::String(services.federation.server_name().to_string()));
    let (displayname, avatar) = services.rooms.profile_of(user)?;
    let mut content = CanonicalJsonObject::new();
    content.insert("membership".into(), CanonicalJsonValue::String(membership.into()));
    if membership == "join" {
        if let Some(d) = displayname {
            content.insert("displayname".into(), CanonicalJsonValue::String(d));
        }
        if let Some(a) = avatar {
            content.insert("avatar_url".into(), CanonicalJsonValue::String(a));
        }
        // A restricted room's resident server names one of its own users to vouch for us; a
        // user of any other server (ours included) is not its to name.
        let authoriser = template_content
            .get("join_authorised_via_users_server")
            .and_then(|u| u.as_str())
            .and_then(|u| UserId::parse(u).ok());
        if let Some(authoriser) = authoriser {
            if authoriser.server_name() == services.federation.server_name() {
                return Err(Error::RemoteUnreachable("the template names one of our users as authoriser".into()));
            }
            content.insert("join_authorised_via_users_server".into(), CanonicalJsonValue::String(authoriser.into()));
        }
    }
    if let Some(reason) = reason {
        content.insert("reason".into(), CanonicalJsonValue::String(reason));
    }
    event.insert("content".into(), CanonicalJsonValue::Object(content));
    hash_and_sign_event(
        services.federation.server_name().as_str(),
        services.federation.own.keypair(),
        &mut event,
        &rules.redaction,
    )
    .map_err(|e| Error::Internal(format!("signing failed: {e}")))?;
    let event_id = event_id_of(&event, version)?;
    Ok((event_id, event))
}

async fn verify_all(
    services: &Services,
    version: &RoomVersionId,
    raws: &[Box<serde_json::value::RawValue>],
) -> Result<Vec<(OwnedEventId, CanonicalJsonObject)>> {
    let mut out = Vec::with_capacity(raws.len());
    for raw in raws {
        let object = canonical_object(raw)?;
        out.push(services.federation.verify_pdu(version, object).await?);
    }
    Ok(out)
}

async fn try_join(
    services: &Arc<Services>,
    server: &ServerName,
    room: &RoomId,
    user: &UserId,
    reason: Option<String>,
) -> Result<OwnedEventId> {
    let fed = &services.federation;
    let mut request = prepare_join_event::v1::Request::new(room.to_owned(), user.to_owned());
    request.ver = supported_versions();
    let made = fed.send(server, request).await?;
    let version = made.room_version.unwrap_or(RoomVersionId::V1);
    if !supported_versions().contains(&version) {
        return Err(Error::UnsupportedRoomVersion(format!("room version {version} is not supported")));
    }
    let template = canonical_object(&made.event)?;
    let prev_events = event_refs(template.get("prev_events"));
    let (event_id, object) = sign_template(services, &version, room, template, user, "join", reason)?;
    let raw = serde_json::value::to_raw_value(&object).map_err(|e| Error::Internal(e.to_string()))?;
    let joined = fed.send(server, create_join_event::v2::Request::new(room.to_owned(), event_id.clone(), raw)).await?;
    let state = verify_all(services, &version, &joined.room_state.state).await?;
    let auth_chain = verify_all(services, &version, &joined.room_state.auth_chain).await?;
    // A restricted join comes back signed by the resident server too.
    let join = match &joined.room_state.event {
        Some(raw) => {
            let (id, signed) = fed.verify_pdu(&version, canonical_object(raw)?).await?;
            if id != event_id {
                return Err(Error::RemoteUnreachable(format!("{server} answered another join event")));
            }
            (id, signed)
        }
        None => (event_id, object),
    };
    // History before the join, oldest first, so `/messages` reaches it: `/backfill` pages of
    // up to 100 events (what servers answer at most), each from the oldest events of the last.
    let mut history: Vec<(OwnedEventId, CanonicalJsonObject)> = Vec::new();
    let mut frontier = prev_events;
    while !frontier.is_empty() && history.len() < JOIN_HISTORY {
        let mut request = get_backfill::v1::Request::new(room.to_owned(), frontier.clone(), Default::default());
        request.limit = (JOIN_HISTORY - history.len()).min(100).try_into().unwrap_or_default();
        let response = match fed.send(server, request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::info!(%server, %room, %error, "no more history with the join");
                break;
            }
        };
        let before = history.len();
        for raw in &response.pdus {
            let Ok(object) = canonical_object(raw) else { continue };
            if let Ok(verified) = fed.verify_pdu(&version, object).await {
                if !history.iter().any(|(id, _)| *id == verified.0) {
                    history.push(verified);
                }
            }
        }
        if history.len() == before {
            break;
        }
        // The next page starts from the prev events of this page that are not held yet.
        let held: std::collections::HashSet<&OwnedEventId> = history.iter().map(|(id, _)| id).collect();
        frontier = history[before..]
            .iter()
            .flat_map(|(_, o)| event_refs(o.get("prev_events")))
            .filter(|id| !held.contains(id))
            .collect();
        frontier.sort();
        frontier.dedup();
    }
    // Only history the join's own prev events lead to: a resident cannot slip other events in.
    let mut history = crate::rooms::remote::ancestors_of(event_refs(join.1.get("prev_events")), &history);
    history.sort_by_key(|(_, o)| o.get("depth").and_then(|d| d.as_integer()).map(i64::from).unwrap_or(0));
    history.dedup_by(|a, b| a.0 == b.0);
    // The state before the oldest history comes from the resident too, checked against what it
    // sent with the join (stored first, so that its `/state_ids` costs no refetch).
    services.rooms.store_outliers(room, &version, &state, &auth_chain)?;
    let roots = super::backfill::root_states(services, server, room, &version, &history).await?;
    let history = crate::rooms::remote::OlderHistory { events: history, roots };
    services.rooms.enter_remote_room(room, version, &state, &auth_chain, &history, join).await
}

/// Invites a user of another server: their server signs the invite, then it is sent into the
/// room like any event of ours.
/// Invites sent to other servers and not yet appended here, by (room, invitee).
#[derive(Default)]
pub struct InFlight {
    pending: std::sync::Mutex<std::collections::HashMap<(ruma::OwnedRoomId, ruma::OwnedUserId), usize>>,
    done: tokio::sync::Notify,
}

/// Ends an in-flight invite however `invite_remote` returns.
struct InviteGuard<'a> {
    flight: &'a InFlight,
    key: (ruma::OwnedRoomId, ruma::OwnedUserId),
}

impl Drop for InviteGuard<'_> {
    fn drop(&mut self) {
        let mut pending = self.flight.pending.lock().expect("invites in flight");
        if let Some(count) = pending.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                pending.remove(&self.key);
            }
        }
        drop(pending);
        self.flight.done.notify_waiters();
    }
}

impl InFlight {
    fn start(&self, room: &RoomId, user: &UserId) -> InviteGuard<'_> {
        let key = (room.to_owned(), user.to_owned());
        *self.pending.lock().expect("invites in flight").entry(key.clone()).or_default() += 1;
        InviteGuard { flight: self, key }
    }

    /// Waits (at most `max`) until no invite of `user` to `room` is under way.
    pub async fn wait(&self, room: &RoomId, user: &UserId, max: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + max;
        let key = (room.to_owned(), user.to_owned());
        loop {
            let finished = self.done.notified();
            if !self.pending.lock().expect("invites in flight").contains_key(&key) {
                return;
            }
            if tokio::time::timeout_at(deadline, finished).await.is_err() {
                return;
            }
        }
    }
}

pub async fn invite_remote(
    services: &Arc<Services>,
    room: &RoomId,
    sender: &UserId,
    invitee: &UserId,
    reason: Option<String>,
    is_direct: bool,
) -> Result<OwnedEventId> {
    let mut content = json!({ "membership": "invite" });
    if let Some(r) = &reason {
        content["reason"] = json!(r);
    }
    if is_direct {
        content["is_direct"] = json!(true);
    }
    invite_remote_with(services, room, sender, invitee, content).await
}

/// Invites a user of another server with the member content given (a third-party invite taken
/// up carries its `third_party_invite`): signed by us, countersigned by the invitee's server.
pub async fn invite_remote_with(
    services: &Arc<Services>,
    room: &RoomId,
    sender: &UserId,
    invitee: &UserId,
    content: serde_json::Value,
) -> Result<OwnedEventId> {
    let fed = &services.federation;
    let server = invitee.server_name();
    fed.require_allowed(server)?;
    let _in_flight = fed.invites_in_flight.start(room, invitee);
    let (version, signed_by_us) = services.rooms.sign_local_event(room, sender, invitee.as_str(), content).await?;
    let event_id = event_id_of(&signed_by_us, &version)?;
    let invite_state = stripped_state_pdus(services, room, Some(sender))?;
    let raw = serde_json::value::to_raw_value(&signed_by_us).map_err(|e| Error::Internal(e.to_string()))?;
    let request =
        create_invite::v2::Request::new(room.to_owned(), event_id.clone(), version.clone(), raw, invite_state);
    let response = fed.send(server, request).await?;
    let (returned_id, object) = fed.verify_pdu(&version, canonical_object(&response.event)?).await?;
    if returned_id != event_id {
        return Err(Error::RemoteUnreachable(format!("{server} changed the invite event")));
    }
    services.rooms.append_remote(room, &event_id, &object, None).await?;
    Ok(event_id)
}

/// The room state an invitee or knocker is shown, as full PDUs (Matrix 1.16 and later), with the
/// inviter's own membership when there is an inviter (as Synapse sends it: the invitee's client
/// needs it to know who invited, and to accept a room-key bundle shared with the invite).
pub fn stripped_state_pdus(
    services: &Services,
    room: &RoomId,
    inviter: Option<&UserId>,
) -> Result<Vec<ruma::api::federation::membership::RawStrippedState>> {
    let mut out = Vec::new();
    let inviter_member = match inviter {
        Some(user) => services.rooms.state_event(room, &ruma::events::StateEventType::RoomMember, user.as_str())?,
        None => None,
    };
    let shared = crate::rooms::STRIPPED_STATE.iter().map(|kind| services.rooms.state_event(room, kind, ""));
    for pdu in shared.chain(std::iter::once(Ok(inviter_member))) {
        if let Some(pdu) = pdu? {
            if let Some(json) = services.rooms.pdu_json_for_peers(&pdu.event_id)? {
                let raw = serde_json::value::RawValue::from_string(String::from_utf8_lossy(&json).into_owned())
                    .map_err(|e| Error::Internal(e.to_string()))?;
                out.push(ruma::api::federation::membership::RawStrippedState::Pdu(raw));
            }
        }
    }
    Ok(out)
}

/// Knocks on a room of another server through the first of `servers` that takes it; the knock
/// is kept as the user's membership (with the room state the resident server answered), so
/// their sync lists the room under `knock`.
pub async fn knock_remote(
    services: &Arc<Services>,
    room: &RoomId,
    user: &UserId,
    servers: &[OwnedServerName],
    reason: Option<String>,
) -> Result<OwnedEventId> {
    let fed = &services.federation;
    let mut last = Error::not_found("no server of the room to knock through is known");
    for server in candidates(services, room, servers) {
        if !fed.allowed(&server) {
            last = Error::forbidden(format!("this server does not federate with {server} (federation.allow)"));
            continue;
        }
        let attempt = async {
            let mut request = prepare_knock_event::v1::Request::new(room.to_owned(), user.to_owned());
            request.ver = supported_versions();
            let made = fed.send(&server, request).await?;
            let version = made.room_version;
            let template = canonical_object(&made.event)?;
            let (event_id, object) = sign_template(services, &version, room, template, user, "knock", reason.clone())?;
            let raw = serde_json::value::to_raw_value(&object).map_err(|e| Error::Internal(e.to_string()))?;
            let knocked =
                fed.send(&server, create_knock_event::v1::Request::new(room.to_owned(), event_id.clone(), raw)).await?;
            let state: Vec<Value> =
                knocked.knock_room_state.iter().filter_map(|s| serde_json::to_value(s).ok()).collect();
            let mut stored = object;
            let mut unsigned = CanonicalJsonObject::new();
            if let Ok(value) = CanonicalJsonValue::try_from(Value::Array(state)) {
                unsigned.insert("knock_room_state".into(), value);
            }
            stored.insert("unsigned".into(), CanonicalJsonValue::Object(unsigned));
            services.rooms.record_remote_membership(room, user, &event_id, &stored, "knock").await?;
            Ok::<_, Error>(event_id)
        };
        match attempt.await {
            Ok(id) => return Ok(id),
            Err(error) => {
                tracing::info!(%server, %room, %error, "knocking through this server failed");
                last = error;
            }
        }
    }
    Err(last)
}

/// Servers to try for a room we are not in: those given, then the room id's server, without
/// ourselves or repeats.
fn candidates(services: &Services, room: &RoomId, servers: &[OwnedServerName]) -> Vec<OwnedServerName> {
    let mut out: Vec<OwnedServerName> = Vec::new();
    for server in servers.iter().cloned().chain(room.server_name().map(ToOwned::to_owned)) {
        if server != services.federation.server_name() && !out.contains(&server) {
            out.push(server);
        }
    }
    out
}

/// Rejects an invite to (or withdraws a knock on) a room this server is not in, through the
/// server that sent the invite.
pub async fn leave_remote(
    services: &Arc<Services>,
    room: &RoomId,
    user: &UserId,
    via: &ServerName,
    reason: Option<String>,
) -> Result<OwnedEventId> {
    let fed = &services.federation;
    let made = fed.send(via, prepare_leave_event::v1::Request::new(room.to_owned(), user.to_owned())).await?;
    let version = made.room_version.unwrap_or(RoomVersionId::V1);
    let template = canonical_object(&made.event)?;
    let (event_id, object) = sign_template(services, &version, room, template, user, "leave", reason)?;
    let raw = serde_json::value::to_raw_value(&object).map_err(|e| Error::Internal(e.to_string()))?;
    fed.send(via, create_leave_event::v2::Request::new(room.to_owned(), event_id.clone(), raw)).await?;
    services.rooms.record_remote_membership(room, user, &event_id, &object, "leave").await?;
    Ok(event_id)
}

/// The stripped state an invite (or a knock's answer) carried, stripped events or full PDUs, in
/// the client format.
pub fn invite_state_of(object: &Value) -> Vec<Value> {
    let unsigned = &object["unsigned"];
    let items = unsigned["invite_room_state"].as_array().or(unsigned["knock_room_state"].as_array());
    let items = items.cloned().unwrap_or_default();
    items
        .iter()
        .map(|e| json!({ "type": e["type"], "state_key": e["state_key"], "sender": e["sender"], "content": e["content"] }))
        .collect()
}

/// Resolves a room alias, asking the alias's server when it is not ours. Returns the room and
/// servers to join through.
pub async fn resolve_alias(
    services: &Services,
    alias: &ruma::RoomAliasId,
) -> Result<(ruma::OwnedRoomId, Vec<OwnedServerName>)> {
    if alias.server_name() == services.federation.server_name() {
        let mut record = services.rooms.resolve_alias(alias)?;
        // An alias in an appservice's namespace may be one it creates when asked.
        if record.is_none() && crate::appservice::sender::query_alias(services, alias).await {
            record = services.rooms.resolve_alias(alias)?;
        }
        let record = record.ok_or_else(|| Error::not_found("unknown room alias"))?;
        let mut servers = vec![services.federation.server_name().to_owned()];
        servers.extend(super::receive::servers_in_room(services, &record.room_id)?);
        return Ok((record.room_id, servers));
    }
    let response = services
        .federation
        .send(
            alias.server_name(),
            ruma::api::federation::query::get_room_information::v1::Request::new(alias.to_owned()),
        )
        .await?;
    Ok((response.room_id, response.servers))
}

/// Whether this server takes part in the room (some local user is joined), so a membership
/// change can be made locally rather than through another server.
pub fn participating(services: &Services, room: &RoomId) -> Result<bool> {
    if !services.rooms.exists(room)? {
        return Ok(false);
    }
    if room.server_name() == Some(services.federation.server_name()) {
        return Ok(true);
    }
    Ok(services.rooms.members(room)?.iter().any(|(u, m)| services.users.is_local(u) && m.membership == "join"))
}

/// Servers of a room we are not in that a local user's pending membership names: the sender of
/// their invite, then the senders of the room state the invite or knock carried (the room's
/// creator among them, whose server is the room's first).
fn membership_servers(services: &Services, room: &RoomId, user: &UserId) -> Result<Vec<OwnedServerName>> {
    let Some(record) = services.rooms.membership(user, room)? else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    if let Some(pdu) = services.rooms.pdu(&record.event_id)? {
        out.push(pdu.sender.server_name().to_owned());
    }
    if let Some(json) = services.rooms.pdu_json(&record.event_id)? {
        let event: Value = serde_json::from_slice(&json).unwrap_or_default();
        for state in invite_state_of(&event) {
            if let Some(sender) = state["sender"].as_str().and_then(|s| UserId::parse(s).ok()) {
                let server = sender.server_name().to_owned();
                if !out.contains(&server) {
                    out.push(server);
                }
            }
        }
    }
    out.retain(|s| s != services.federation.server_name());
    Ok(out)
}

/// Joins a room locally when this server is in it, else through other servers.
pub async fn join(
    services: &Arc<Services>,
    room: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    reason: Option<String>,
) -> Result<OwnedEventId> {
    services.rooms.check_not_blocked(room)?;
    if participating(services, room)? {
        return services.rooms.join(room, user, reason).await;
    }
    let mut servers = membership_servers(services, room, user)?;
    servers.extend_from_slice(via);
    join_remote(services, room, user, &servers, reason).await
}

/// Leaves a room; an invite to a room we are not in is rejected through its sender's server.
pub async fn leave(services: &Arc<Services>, room: &RoomId, user: &UserId, reason: Option<String>) -> Result<()> {
    if participating(services, room)? {
        services.rooms.set_membership(room, user, user, "leave", reason, serde_json::Map::new()).await?;
        return Ok(());
    }
    let servers = membership_servers(services, room, user)?;
    if servers.is_empty() {
        return Err(Error::forbidden("you are not in this room"));
    }
    let mut last = Error::forbidden("you are not in this room");
    for via in candidates(services, room, &servers) {
        match leave_remote(services, room, user, &via, reason.clone()).await {
            Ok(_) => return Ok(()),
            Err(error) => last = error,
        }
    }
    Err(last)
}

/// Knocks locally when this server is in the room, else through other servers.
pub async fn knock(
    services: &Arc<Services>,
    room: &RoomId,
    user: &UserId,
    via: &[OwnedServerName],
    reason: Option<String>,
) -> Result<OwnedEventId> {
    if participating(services, room)? {
        return services.rooms.set_membership(room, user, user, "knock", reason, serde_json::Map::new()).await;
    }
    knock_remote(services, room, user, via, reason).await
}
