//! Inbound transactions: PDUs verified and taken into their rooms (missing prev events fetched
//! with `/get_missing_events`, missing state with `/state_ids`, unknown auth events with
//! `/event`), EDUs applied when the origin may speak for the user or room they name.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{
    api::federation::event::{get_event, get_missing_events, get_room_state_ids},
    events::StateEventType,
    CanonicalJsonObject, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomId,
    RoomVersionId, ServerName, UserId,
};
use serde_json::Value;

use super::{canonical_object, Federation};
use crate::{
    db::{codec::Json, Batch},
    ephemeral::{receipts::Receipt, to_device::ToDeviceMessage},
    error::{Error, Result},
    rooms::remote::{event_ids_in, Accepted, Durable, TypedState},
    services::Services,
};

/// The spec's limits on one transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;
/// Most events fetched to fill one gap before falling back to the state at the event.
const MISSING_EVENTS_LIMIT: u64 = 20;
/// The most bytes read of one event fetched (`/event`): a PDU is at most 64 KiB.
const ONE_EVENT_BYTES: usize = 256 * 1024;
/// The most bytes read of a page of events (`/get_missing_events`).
const PAGE_BYTES: usize = 8 * 1024 * 1024;
/// The most bytes read of a `/state_ids` answer, and the most ids it may list in each part.
const STATE_IDS_BYTES: usize = 16 * 1024 * 1024;
const STATE_IDS_MAX: usize = 100_000;
/// The most events of a state we fetch for one PDU: a server back from a partition lacks a few
/// state events, not the whole room.
const STATE_FETCH_MAX: usize = 1_000;
/// Events one gap may be filled with through `/get_missing_events`, page after page.
const MISSING_EVENTS_MAX: usize = 500;

/// Processes `PUT /send/{txnId}`: each room's PDUs in order, rooms in parallel, then the EDUs.
/// A transaction seen before is answered as it was the first time.
#[tracing::instrument(name = "federation.receive_transaction", skip_all, fields(origin = %origin, txn_id = %txn_id, pdus = pdus.len(), edus = edus.len()))]
pub async fn transaction(
    services: &Arc<Services>,
    origin: &ServerName,
    txn_id: &str,
    pdus: &[Box<serde_json::value::RawValue>],
    edus: &[Value],
) -> Result<BTreeMap<OwnedEventId, Result<(), String>>> {
    if pdus.len() > MAX_PDUS || edus.len() > MAX_EDUS {
        return Err(Error::BadJson(format!("a transaction holds at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")));
    }
    let key = (origin.to_owned(), txn_id.to_owned());
    if let Some(done) = services.db.tables.federation.origintxn_done.get(&key)? {
        let answer: BTreeMap<OwnedEventId, Option<String>> = serde_json::from_slice(&done).unwrap_or_default();
        return Ok(answer.into_iter().map(|(id, e)| (id, e.map_or(Ok(()), Err))).collect());
    }
    services.federation.note_received(origin);
    let received = services.federation.count_transaction();
    let mut by_room: BTreeMap<OwnedRoomId, Vec<CanonicalJsonObject>> = BTreeMap::new();
    let mut results = BTreeMap::new();
    for raw in pdus {
        let object = match canonical_object(raw) {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(%origin, error = %e, "unreadable PDU in a transaction");
                continue;
            }
        };
        let Some(room) = object.get("room_id").and_then(|r| r.as_str()).and_then(|r| RoomId::parse(r).ok()) else {
            continue;
        };
        by_room.entry(room).or_default().push(object);
    }
    let rooms = by_room.into_iter().map(|(room, objects)| {
        let services = services.clone();
        async move { room_pdus(&services, origin, &room, objects).await }
    });
    let mut durables = Vec::new();
    for (room_results, room_durables) in futures::future::join_all(rooms).await {
        durables.extend(room_durables);
        for (id, result) in room_results {
            if let Some(id) = id {
                results.insert(id, result);
            }
        }
    }
    // Answered only once everything taken in is on disk (one group commit for the lot).
    for durable in durables {
        crate::stream::wait_durable(durable).await?;
    }
    for edu in edus {
        if let Err(error) = handle_edu(services, origin, edu).await {
            tracing::debug!(%origin, %error, "EDU ignored");
        }
    }
    let stored: BTreeMap<&OwnedEventId, Option<&String>> =
        results.iter().map(|(id, r): (&OwnedEventId, &Result<(), String>)| (id, r.as_ref().err())).collect();
    let mut batch = Batch::new();
    services.db.tables.federation.origintxn_done.insert(
        &mut batch,
        &key,
        &serde_json::to_vec(&stored).unwrap_or_default(),
    );
    let seq = (crate::time::now_ms() << 20) | (received & 0xF_FFFF);
    services.db.tables.federation.receivedseq_origintxn.insert(
        &mut batch,
        &crate::db::codec::Be64(seq),
        &Json(key.clone()),
    );
    // Not fsynced on its own (the next group commit carries it): what the transaction brought is
    // durable already, and should this record be lost, the origin's retry is answered from the
    // PDUs held (deduped by event id) and to-device messages are deduped by message id.
    services.db.write_unsynced(batch)?;
    Ok(results.into_iter().map(|(id, r)| (id, r.map_err(|e| e.to_string()))).collect())
}

/// A room being joined: the joins under way, the PDUs held for it.
#[derive(Default)]
pub(crate) struct Joining {
    attempts: usize,
    parked: Vec<Parked>,
}

/// PDUs of a room being joined, from one origin, held until the join completes.
pub(crate) struct Parked {
    origin: OwnedServerName,
    objects: Vec<CanonicalJsonObject>,
}

/// PDUs held per room being joined, at most: beyond, they are dropped (the next event's
/// `prev_events` brings them back through `/get_missing_events`).
const PARKED_MAX: usize = 1000;
/// PDUs held per room being joined from one origin: one server cannot take every place.
const PARKED_PER_ORIGIN: usize = 250;

type RoomResults = (Vec<(Option<OwnedEventId>, Result<(), String>)>, Vec<Durable>);

/// One room's PDUs of a transaction, in order.
async fn room_pdus(
    services: &Arc<Services>,
    origin: &ServerName,
    room: &RoomId,
    objects: Vec<CanonicalJsonObject>,
) -> RoomResults {
    let mut out = Vec::new();
    let mut durables = Vec::new();
    let version = match services.rooms.room(room) {
        Ok(Some(record)) => record.version,
        other => {
            let error = match other {
                Err(e) => e.to_string(),
                _ => {
                    let mut joining = services.federation.joining.lock().expect("joining rooms");
                    if let Some(joining) = joining.get_mut(room) {
                        let held: usize = joining.parked.iter().map(|p| p.objects.len()).sum();
                        let from_origin: usize =
                            joining.parked.iter().filter(|p| p.origin == origin).map(|p| p.objects.len()).sum();
                        if held + objects.len() <= PARKED_MAX && from_origin + objects.len() <= PARKED_PER_ORIGIN {
                            out.extend(objects.iter().map(|o| (fallback_id(o), Ok(()))));
                            joining.parked.push(Parked { origin: origin.to_owned(), objects });
                            return (out, durables);
                        }
                    }
                    format!("this server is not in {room}")
                }
            };
            out.extend(objects.iter().map(|o| (fallback_id(o), Err(error.clone()))));
            return (out, durables);
        }
    };
    // Signatures and hashes are checked side by side (they are most of the CPU a PDU costs);
    // the PDUs are then taken in one after the other, in order.
    let checks: Vec<_> = objects
        .into_iter()
        .map(|object| {
            let (services, version) = (services.clone(), version.clone());
            tokio::spawn(async move {
                let fallback = fallback_id(&object);
                let (id, verified) = services.federation.verify_pdu_naming(&version, object).await;
                (id.or(fallback), verified)
            })
        })
        .collect();
    for check in checks {
        let (claimed, verified) = match check.await {
            Ok(done) => done,
            Err(e) => (None, Err(Error::Internal(format!("verifying a PDU failed: {e}")))),
        };
        match handle_pdu(services, origin, room, claimed.clone(), verified, &mut durables).await {
            Ok(id) => out.push((id, Ok(()))),
            Err((id, e)) => out.push((id.or(claimed), Err(e))),
        }
    }
    (out, durables)
}

/// Marks `room` as being joined: PDUs for it are held from now on.
pub(crate) fn start_joining(services: &Services, room: &RoomId) {
    services.federation.joining.lock().expect("joining rooms").entry(room.to_owned()).or_default().attempts += 1;
}

/// Ends a join attempt. Once joined, the PDUs held meanwhile are taken in, in arrival order;
/// a failed attempt keeps them for another local user's join of the room still under way.
pub(crate) async fn end_joining(services: &Arc<Services>, room: &RoomId, joined: bool) {
    let parked = {
        let mut joining = services.federation.joining.lock().expect("joining rooms");
        let Some(entry) = joining.get_mut(room) else { return };
        entry.attempts = entry.attempts.saturating_sub(1);
        if !joined && entry.attempts > 0 {
            return;
        }
        joining.remove(room).map(|e| e.parked).unwrap_or_default()
    };
    if !joined {
        return;
    }
    for Parked { origin, objects } in parked {
        let (results, durables) = room_pdus(services, &origin, room, objects).await;
        for (id, result) in results {
            if let (Some(id), Err(error)) = (id, result) {
                tracing::info!(%room, %origin, event_id = %id, %error, "a PDU held during the join was refused");
            }
        }
        for durable in durables {
            if let Err(error) = crate::stream::wait_durable(durable).await {
                tracing::warn!(%room, %error, "a PDU held during the join was not persisted");
            }
        }
    }
}

fn fallback_id(object: &CanonicalJsonObject) -> Option<OwnedEventId> {
    object.get("event_id").and_then(|v| v.as_str()).and_then(|s| OwnedEventId::try_from(s).ok())
}

/// Whether `server` may take part in the room under its `m.room.server_acl`.
pub fn acl_allows(services: &Services, room: &RoomId, server: &ServerName) -> bool {
    let Ok(Some(acl)) = services.rooms.state_event(room, &StateEventType::RoomServerAcl, "") else { return true };
    let content: Value = serde_json::from_str(acl.content.get()).unwrap_or_default();
    acl_permits(&content, server)
}

/// Whether an `m.room.server_acl` content lets `server` in. Server names are matched
/// case-insensitively, as the spec says: `EVIL.example` is `evil.example`.
pub fn acl_permits(content: &Value, server: &ServerName) -> bool {
    let name = server.as_str().to_ascii_lowercase();
    let host = super::client::split_host_port(&name).0;
    let globs = |key: &str| -> Vec<String> {
        content[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_ascii_lowercase)).collect()
    };
    if content["allow_ip_literals"] == Value::Bool(false)
        && host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok()
    {
        return false;
    }
    if globs("deny").iter().any(|g| glob_match(g, host)) {
        return false;
    }
    globs("allow").iter().any(|g| glob_match(g, host))
}

/// `*` and `?` globs, as server ACLs use them.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

type PduError = (Option<OwnedEventId>, String);

/// Takes in one PDU whose signatures were checked (`verified`), filling gaps before it from
/// `origin`. `claimed` is the id it claims, so that a refusal names it in the answer.
async fn handle_pdu(
    services: &Arc<Services>,
    origin: &ServerName,
    room: &RoomId,
    claimed: Option<OwnedEventId>,
    verified: Result<(OwnedEventId, CanonicalJsonObject)>,
    durables: &mut Vec<Durable>,
) -> std::result::Result<Option<OwnedEventId>, PduError> {
    if !acl_allows(services, room, origin) {
        return Err((claimed, format!("{origin} is denied by the room's server ACL")));
    }
    let (event_id, object) = verified.map_err(|e| (claimed.clone(), e.to_string()))?;
    let fail = |e: Error| (Some(event_id.clone()), e.to_string());
    if services.rooms.in_timeline(&event_id).map_err(fail)? {
        return Ok(Some(event_id));
    }
    take_in(services, origin, room, &event_id, object, true, durables).await.map_err(fail)?;
    Ok(Some(event_id))
}

/// Fetches what the event needs (auth events, then prev events or the state before it) and
/// appends it. `fill_gaps` is false for events fetched while filling a gap (no recursion).
async fn take_in(
    services: &Arc<Services>,
    origin: &ServerName,
    room: &RoomId,
    event_id: &EventId,
    object: CanonicalJsonObject,
    fill_gaps: bool,
    durables: &mut Vec<Durable>,
) -> Result<()> {
    let version = services.rooms.room(room)?.map(|r| r.version).ok_or_else(|| Error::not_found("unknown room"))?;
    let auth_events = event_ids_in(&object, "auth_events");
    fetch_auth_events(services, origin, room, &version, &auth_events).await?;
    let mut missing = services.rooms.missing_prev_events(&object)?;
    if !missing.is_empty() && fill_gaps {
        fill_gap(services, origin, room, event_id, durables).await;
        missing = services.rooms.missing_prev_events(&object)?;
    }
    let (outcome, durable) = if missing.is_empty() {
        services.rooms.append_remote_deferred(room, event_id, &object, None).await?
    } else {
        let state = state_at(services, origin, room, &version, event_id).await?;
        services.rooms.append_remote_deferred(room, event_id, &object, Some(&state)).await?
    };
    durables.extend(durable);
    match outcome {
        Accepted::Rejected(reason) => Err(Error::forbidden(format!("{event_id} was rejected: {reason}"))),
        Accepted::SoftFailed(reason) => {
            tracing::info!(%event_id, %reason, "soft-failed");
            Ok(())
        }
        Accepted::Timeline | Accepted::Duplicate => Ok(()),
    }
}

/// Fetches one event from a server and verifies it.
pub async fn fetch_event(
    services: &Services,
    origin: &ServerName,
    version: &RoomVersionId,
    event_id: &EventId,
) -> Result<CanonicalJsonObject> {
    services.federation.count_fetch(origin)?;
    let response = services
        .federation
        .send_bounded(origin, get_event::v1::Request::new(event_id.to_owned()), ONE_EVENT_BYTES)
        .await?;
    let object = canonical_object(&response.pdu)?;
    let (id, object) = services.federation.verify_pdu(version, object).await?;
    if id != event_id {
        return Err(Error::forbidden(format!("{origin} answered {id} when asked for {event_id}")));
    }
    Ok(object)
}

/// Makes sure every auth event (and theirs, recursively) is held, fetching from `origin`.
pub(super) async fn fetch_auth_events(
    services: &Services,
    origin: &ServerName,
    room: &RoomId,
    version: &RoomVersionId,
    ids: &[OwnedEventId],
) -> Result<()> {
    let mut todo: Vec<OwnedEventId> = ids.to_vec();
    let mut fetched = 0;
    let mut stack: Vec<(OwnedEventId, CanonicalJsonObject)> = Vec::new();
    while let Some(id) = todo.pop() {
        if services.rooms.knows_event(&id)? || stack.iter().any(|(s, _)| *s == id) {
            continue;
        }
        fetched += 1;
        if fetched > 500 {
            return Err(Error::RemoteUnreachable("the auth chain to fetch is too long".into()));
        }
        let object = fetch_event(services, origin, version, &id).await?;
        todo.extend(event_ids_in(&object, "auth_events"));
        stack.push((id, object));
    }
    // Deepest first, so each stored event's auth events are stored (and checked) before it.
    for (id, object) in stack.into_iter().rev() {
        services.rooms.store_outlier(room, version, &id, &object)?;
    }
    Ok(())
}

/// Asks `origin` for the events between what we hold and `latest`, and takes them in, oldest
/// first. A gap longer than one answer (a server back from a partition sends its newest events
/// only) is walked back page by page, up to [`MISSING_EVENTS_MAX`] events; what is still missing
/// then is covered by the state `/state_ids` gives.
async fn fill_gap(
    services: &Arc<Services>,
    origin: &ServerName,
    room: &RoomId,
    latest: &EventId,
    durables: &mut Vec<Durable>,
) {
    let Ok(Some(record)) = services.rooms.room(room) else { return };
    let mut events: Vec<(i64, OwnedEventId, CanonicalJsonObject)> = Vec::new();
    let mut wanted = vec![latest.to_owned()];
    while !wanted.is_empty() && events.len() < MISSING_EVENTS_MAX {
        let mut request =
            get_missing_events::v1::Request::new(room.to_owned(), record.extremities.clone(), wanted.clone());
        request.limit = MISSING_EVENTS_LIMIT.try_into().unwrap_or_default();
        let response = match services.federation.send_bounded(origin, request, PAGE_BYTES).await {
            Ok(r) => r,
            Err(error) => {
                tracing::info!(%origin, %error, "get_missing_events failed");
                break;
            }
        };
        let before = events.len();
        for raw in &response.events {
            let Ok(object) = canonical_object(raw) else { continue };
            let Ok((id, object)) = services.federation.verify_pdu(&record.version, object).await else { continue };
            if events.iter().any(|(_, e, _)| *e == id) {
                continue;
            }
            let depth = object.get("depth").and_then(|d| d.as_integer()).map(i64::from).unwrap_or(0);
            events.push((depth, id, object));
        }
        if events.len() == before {
            break;
        }
        // Next page: the prev events of this page that neither we nor the pages so far hold.
        let held: std::collections::HashSet<OwnedEventId> = events.iter().map(|(_, id, _)| id.clone()).collect();
        wanted = events[before..]
            .iter()
            .flat_map(|(_, _, o)| event_ids_in(o, "prev_events"))
            .filter(|id| !held.contains(id) && !services.rooms.in_timeline(id).unwrap_or(true))
            .collect();
        wanted.sort();
        wanted.dedup();
    }
    events.sort_by_key(|(depth, _, _)| *depth);
    for (_, id, object) in events {
        if services.rooms.in_timeline(&id).unwrap_or(true) {
            continue;
        }
        if let Err(error) = Box::pin(take_in(services, origin, room, &id, object, false, durables)).await {
            tracing::info!(%id, %error, "a missing event could not be taken in");
        }
    }
}

/// The state before an event, from `origin`'s `/state_ids`, fetching the events we lack.
pub(super) async fn state_at(
    services: &Services,
    origin: &ServerName,
    room: &RoomId,
    version: &RoomVersionId,
    event_id: &EventId,
) -> Result<TypedState> {
    let response = services
        .federation
        .send_bounded(
            origin,
            get_room_state_ids::v1::Request::new(event_id.to_owned(), room.to_owned()),
            STATE_IDS_BYTES,
        )
        .await?;
    if response.pdu_ids.len() > STATE_IDS_MAX || response.auth_chain_ids.len() > STATE_IDS_MAX {
        return Err(Error::RemoteUnreachable(format!("{origin} answered a state of more than {STATE_IDS_MAX} events")));
    }
    fetch_auth_events(services, origin, room, version, &response.auth_chain_ids).await?;
    let mut state = TypedState::new();
    let mut missing = 0;
    for id in &response.pdu_ids {
        if !services.rooms.knows_event(id)? {
            missing += 1;
            if missing > STATE_FETCH_MAX {
                return Err(Error::RemoteUnreachable(format!(
                    "{origin}'s state names more than {STATE_FETCH_MAX} events we lack"
                )));
            }
            let object = fetch_event(services, origin, version, id).await?;
            fetch_auth_events(services, origin, room, version, &event_ids_in(&object, "auth_events")).await?;
            services.rooms.store_outlier(room, version, id, &object)?;
        }
        // A rejected event is no part of any state, whatever the server says.
        if !services.rooms.held_and_accepted(id)? {
            continue;
        }
        let pdu = services.rooms.pdu(id)?.ok_or_else(|| Error::Internal(format!("{id} vanished")))?;
        if let Some(key) = pdu.state_key {
            state.insert((pdu.kind.to_string().into(), key), id.clone());
        }
    }
    Ok(state)
}

/// Whether `origin` may speak for `user` (the user is on that server).
fn speaks_for(origin: &ServerName, user: &UserId) -> bool {
    user.server_name() == origin
}

async fn handle_edu(services: &Arc<Services>, origin: &ServerName, edu: &Value) -> Result<()> {
    let content = &edu["content"];
    match edu["edu_type"].as_str().unwrap_or("") {
        "m.typing" => {
            let room =
                RoomId::parse(content["room_id"].as_str().unwrap_or("")).map_err(|e| Error::BadJson(e.to_string()))?;
            let user =
                UserId::parse(content["user_id"].as_str().unwrap_or("")).map_err(|e| Error::BadJson(e.to_string()))?;
            if !speaks_for(origin, &user)
                || !services.rooms.is_joined(&user, &room)?
                || !acl_allows(services, &room, origin)
            {
                return Err(Error::forbidden("typing for a user the origin does not host or not in the room"));
            }
            let typing = content["typing"].as_bool().unwrap_or(false);
            services.typing.set(&room, &user, typing.then_some(Duration::from_secs(30)));
            crate::appservice::sender::queue_typing(services, &room);
        }
        "m.receipt" => {
            let Some(rooms) = content.as_object() else { return Ok(()) };
            for (room, kinds) in rooms {
                let Ok(room) = RoomId::parse(room) else { continue };
                if !acl_allows(services, &room, origin) {
                    continue;
                }
                for (kind, users) in kinds.as_object().into_iter().flatten() {
                    if kind != "m.read" {
                        continue;
                    }
                    for (user, receipt) in users.as_object().into_iter().flatten() {
                        let Ok(user) = UserId::parse(user) else { continue };
                        if !speaks_for(origin, &user) || !services.rooms.is_joined(&user, &room)? {
                            continue;
                        }
                        let Some(event) = receipt["event_ids"]
                            .as_array()
                            .and_then(|ids| ids.last())
                            .and_then(|id| id.as_str())
                            .and_then(|id| OwnedEventId::try_from(id).ok())
                        else {
                            continue;
                        };
                        let thread_id = receipt["data"]["thread_id"].as_str().map(str::to_owned);
                        let ts = receipt["data"]["ts"].as_u64().unwrap_or_else(crate::time::now_ms);
                        let receipt = Receipt { user, receipt_type: "m.read".into(), event_id: event, thread_id, ts };
                        services.receipts.set(&room, receipt.clone()).await?;
                        crate::appservice::sender::queue_receipt(services, &room, &receipt);
                    }
                }
            }
        }
        "m.presence" => {
            for update in content["push"].as_array().into_iter().flatten() {
                let Ok(user) = UserId::parse(update["user_id"].as_str().unwrap_or("")) else { continue };
                if !speaks_for(origin, &user) {
                    continue;
                }
                let presence = update["presence"].as_str().unwrap_or("offline");
                if !matches!(presence, "online" | "offline" | "unavailable") {
                    continue;
                }
                let status = update.get("status_msg").map(|s| s.as_str().map(str::to_owned));
                if services.presence.set(&user, presence, status).await? {
                    crate::appservice::sender::queue_presence(services, &user);
                }
            }
        }
        "m.direct_to_device" => {
            let sender =
                UserId::parse(content["sender"].as_str().unwrap_or("")).map_err(|e| Error::BadJson(e.to_string()))?;
            if !speaks_for(origin, &sender) {
                return Err(Error::forbidden("to-device messages from a user the origin does not host"));
            }
            let kind = content["type"].as_str().unwrap_or("").to_owned();
            let message_id = content["message_id"].as_str().unwrap_or("").to_owned();
            let mut deliveries = Vec::new();
            for (user, devices) in content["messages"].as_object().into_iter().flatten() {
                let Ok(user) = UserId::parse(user) else { continue };
                if !services.users.is_local(&user) {
                    continue;
                }
                for (device, body) in devices.as_object().into_iter().flatten() {
                    let targets: Vec<OwnedDeviceId> = if device == "*" {
                        services.users.devices(&user)?.into_iter().map(|(id, _)| id).collect()
                    } else {
                        vec![device.as_str().into()]
                    };
                    for target in targets {
                        if services.users.device(&user, &target)?.is_none() {
                            continue;
                        }
                        deliveries.push((
                            user.clone(),
                            target,
                            ToDeviceMessage { sender: sender.clone(), kind: kind.clone(), content: body.clone() },
                        ));
                    }
                }
            }
            if !deliveries.is_empty() {
                let device: OwnedDeviceId = format!("federation:{origin}").as_str().into();
                services.to_device.send(&sender, &device, &message_id, deliveries.clone()).await?;
                crate::appservice::sender::queue_to_device(services, &deliveries);
            }
        }
        "m.device_list_update" | "m.signing_key_update" => {
            let user = UserId::parse(content["user_id"].as_str().unwrap_or(""))
                .or_else(|_| UserId::parse(content["master_key"]["user_id"].as_str().unwrap_or("")))
                .map_err(|e| Error::BadJson(e.to_string()))?;
            if !speaks_for(origin, &user) {
                return Err(Error::forbidden("a device list update for a user the origin does not host"));
            }
            services.keys.remote_keys_changed(&user).await?;
        }
        super::threepid::NOTICE_EDU => super::threepid::on_notice(services, origin, content)?,
        super::threepid::BOUND_EDU => super::threepid::on_bound(services, origin, content)?,
        _ => {}
    }
    Ok(())
}

/// The servers of a room's joined members (where a room's events must go), ours excluded.
///
/// Cached per room and durable state snapshot (written in the batch that changes the
/// memberships): every local event asks, and a big room has many members.
pub fn servers_in_room(services: &Services, room: &RoomId) -> Result<Vec<OwnedServerName>> {
    let snapshot = services.db.tables.rooms.roomid_room.get(&room.to_owned())?.map(|r| r.0.snapshot);
    let cache = &services.federation.room_servers;
    if let Some((at, servers)) = cache.lock().expect("room servers").get(room) {
        if Some(*at) == snapshot {
            return Ok(servers.clone());
        }
    }
    let mut servers: Vec<OwnedServerName> = services
        .rooms
        .members(room)?
        .into_iter()
        .filter(|(_, m)| m.membership == "join")
        .map(|(u, _): (OwnedUserId, _)| u.server_name().to_owned())
        .filter(|s| s != services.federation.server_name())
        .collect();
    servers.sort();
    servers.dedup();
    if let Some(snapshot) = snapshot {
        let mut cache = cache.lock().expect("room servers");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(room.to_owned(), (snapshot, servers.clone()));
    }
    Ok(servers)
}

impl Federation {
    /// Whether a stored event may be handed to `server` (history visibility of its users).
    pub fn server_may_see(services: &Services, server: &ServerName, room: &RoomId, event: &EventId) -> Result<bool> {
        let Some(meta) = services.rooms.meta(event)? else {
            // Outliers (state and auth events) are part of the room's structure, not history.
            return Ok(services.rooms.outlier(event)?.is_some_and(|o| o.room_id == room && !o.rejected));
        };
        if meta.room_id != room {
            return Ok(false);
        }
        let window = services.rooms.server_window(server, room)?;
        Ok(window.may_see(meta.pos))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::acl_permits;

    fn server(name: &str) -> ruma::OwnedServerName {
        name.try_into().expect("a server name")
    }

    #[test]
    fn acl_names_match_whatever_their_case() {
        let acl = json!({ "allow": ["*"], "deny": ["evil.example", "*.Bad.Example"] });
        assert!(!acl_permits(&acl, &server("EVIL.example")));
        assert!(!acl_permits(&acl, &server("evil.EXAMPLE:8448")));
        assert!(!acl_permits(&acl, &server("host.bad.example")));
        assert!(acl_permits(&acl, &server("good.example")));
        let allow_only = json!({ "allow": ["Friend.Example"] });
        assert!(acl_permits(&allow_only, &server("friend.example")));
        assert!(!acl_permits(&allow_only, &server("other.example")));
    }
}
