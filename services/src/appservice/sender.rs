//! What the server sends its appservices: transactions of events (one more consumer of the event
//! stream, like sync and the federation sender), pings, and queries for users and aliases.
//!
//! Each appservice has one task that scans the stream from the position it has delivered up to
//! (`meta` key `appservice_pos:<id>`), keeps the events it is interested in (spec: its users send
//! or are members of the room, or the room matches its namespaces) and sends up to [`MAX_EVENTS`]
//! of them in one `PUT /_matrix/app/v1/transactions/{txnId}`. Before sending, it records the end of
//! the transaction (`appservice_txn:<id>`), so that after a restart the same transaction — same
//! id, same events — is sent again and the appservice's own dedupe by id applies: nothing lost,
//! nothing repeated. Only a success moves the position. Failures back off, doubling, capped.
//!
//! An invite from another server into a room this server is not in is no event of the stream
//! (`Rooms::record_remote_membership` keeps it aside for the invitee's sync): the federation
//! invite handler queues it with [`queue_remote_invite`] (`meta` keys `appservice_invite:<id>:…`,
//! durable) and the appservice's task sends it in a transaction of its own before the stream's.

pub mod state;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{events::StateEventType, EventId, OwnedEventId, OwnedRoomId, RoomAliasId, RoomId, UserId};
use serde_json::{json, Value};

pub use self::state::AppserviceSender;
use super::Appservice;
use crate::{
    db::{
        codec::{Be64, Codec},
        Batch,
    },
    error::{Error, Result},
    services::Services,
};

/// Events per transaction.
const MAX_EVENTS: usize = 100;
/// Stream positions looked at per round (most events of a busy server concern no appservice).
const MAX_SCANNED: usize = 5_000;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A ping or query waits this long for the appservice.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Ephemeral events (typing, receipts) kept per appservice until its next transaction; beyond
/// this many the oldest are dropped (they are worth little once stale).
const MAX_EPHEMERAL: usize = 1_000;

impl AppserviceSender {
    /// When this process first sent an ephemeral-only transaction: with a counter, their ids
    /// never repeat across restarts.
    fn started_ms(&self) -> u64 {
        *self.started.get_or_init(crate::time::now_ms)
    }
}

/// Queues a room's typing or receipt event (with its `room_id`) for every appservice that asked
/// for ephemeral data and is interested in the room.
pub fn queue_ephemeral(services: &Services, room: &ruma::RoomId, event: Value) {
    let mut queued = false;
    for service in services.appservices.all() {
        if !service.registration.receive_ephemeral || service.registration.url.is_none() {
            continue;
        }
        let mut rooms = HashMap::new();
        match room_interest(services, service, &mut rooms, room) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(error) => {
                tracing::warn!(%error, "checking an appservice's interest in a room failed");
                continue;
            }
        }
        push_ephemeral(services, &service.registration.id, event.clone());
        queued = true;
    }
    if queued {
        services.appservice_sender.ephemeral_ready.notify_waiters();
    }
}

/// The `m.typing` event of a room now, for the appservices.
pub fn queue_typing(services: &Services, room: &ruma::RoomId) {
    if !services.appservices.all().iter().any(|s| s.registration.receive_ephemeral) {
        return;
    }
    let users = services.typing.typing_in(room, None).unwrap_or_default();
    queue_ephemeral(services, room, json!({ "type": "m.typing", "room_id": room, "content": { "user_ids": users } }));
}

/// A public read receipt, for the appservices (private receipts stay private).
pub fn queue_receipt(services: &Services, room: &ruma::RoomId, receipt: &crate::ephemeral::receipts::Receipt) {
    if receipt.receipt_type != "m.read" || !services.appservices.all().iter().any(|s| s.registration.receive_ephemeral)
    {
        return;
    }
    let mut data = json!({ "ts": receipt.ts });
    if let Some(thread) = &receipt.thread_id {
        data["thread_id"] = thread.as_str().into();
    }
    let content = json!({ receipt.event_id.as_str(): { "m.read": { receipt.user.as_str(): data } } });
    queue_ephemeral(services, room, json!({ "type": "m.receipt", "room_id": room, "content": content }));
}

/// Puts an event in an appservice's next transaction.
fn push_ephemeral(services: &Services, id: &str, event: Value) {
    let mut queues = services.appservice_sender.ephemeral.lock().expect("appservice ephemeral");
    let queue = queues.entry(id.to_owned()).or_default();
    if queue.len() == MAX_EPHEMERAL {
        queue.remove(0);
    }
    queue.push(event);
}

/// A user's presence change (`m.presence`), for the appservices with `receive_ephemeral` that
/// claim the user or share a room of interest with them (MSC2409).
pub fn queue_presence(services: &Services, user: &UserId) {
    let wanting: Vec<&Appservice> = services
        .appservices
        .all()
        .iter()
        .filter(|s| s.registration.receive_ephemeral && s.registration.url.is_some())
        .collect();
    if wanting.is_empty() {
        return;
    }
    let Ok(Some(record)) = services.presence.get(user) else { return };
    let mut content = json!({
        "presence": record.presence,
        "last_active_ago": crate::time::now_ms().saturating_sub(record.last_active_ts),
        "currently_active": record.presence == "online",
    });
    if let Some(status) = &record.status_msg {
        content["status_msg"] = json!(status);
    }
    let event = json!({ "type": "m.presence", "sender": user, "content": content });
    let rooms = services.rooms.rooms_of(user, "join").unwrap_or_default();
    let mut queued = false;
    for service in wanting {
        let mut known = HashMap::new();
        let interested = service.claims_user(user)
            || rooms.iter().any(|room| room_interest(services, service, &mut known, room).unwrap_or(false));
        if interested {
            push_ephemeral(services, &service.registration.id, event.clone());
            queued = true;
        }
    }
    if queued {
        services.appservice_sender.ephemeral_ready.notify_waiters();
    }
}

/// To-device messages for users an appservice claims, sent to it too (MSC4203) when it has
/// `receive_ephemeral`: it holds its users' devices and does not sync for them. They also stay
/// in the devices' inboxes, for an appservice that syncs as its users.
pub fn queue_to_device(
    services: &Services,
    deliveries: &[(ruma::OwnedUserId, ruma::OwnedDeviceId, crate::ephemeral::to_device::ToDeviceMessage)],
) {
    let mut queued = false;
    for service in services.appservices.all() {
        if !service.registration.receive_ephemeral || service.registration.url.is_none() {
            continue;
        }
        for (user, device, message) in deliveries.iter().filter(|(user, _, _)| service.claims_user(user)) {
            let event = json!({
                "type": message.kind,
                "sender": message.sender,
                "to_user_id": user,
                "to_device_id": device,
                "content": message.content,
            });
            push_ephemeral(services, &service.registration.id, event);
            queued = true;
        }
    }
    if queued {
        services.appservice_sender.ephemeral_ready.notify_waiters();
    }
}

/// An invite from another server (federation `/invite`) into a room this server is not in, for
/// the appservices claiming the invitee: kept durably until their transaction carrying it is
/// accepted. Called once the invite is recorded (`Rooms::record_remote_membership`).
pub fn queue_remote_invite(services: &Services, room: &RoomId, invitee: &UserId, event_id: &EventId) -> Result<()> {
    let wanting: Vec<&Appservice> =
        services.appservices.all().iter().filter(|s| s.registration.url.is_some() && s.claims_user(invitee)).collect();
    if wanting.is_empty() {
        return Ok(());
    }
    let pos = services.rooms.membership(invitee, room)?.map(|m| m.pos).unwrap_or_else(|| services.db.current_count());
    let mut batch = Batch::new();
    for service in wanting {
        let key = format!("{}{pos:020}:{event_id}", invite_prefix(&service.registration.id));
        services.db.tables.meta.insert(&mut batch, &key, &Be64(pos));
    }
    services.db.commit(batch)?;
    services.appservice_sender.ephemeral_ready.notify_waiters();
    Ok(())
}

fn invite_prefix(id: &str) -> String {
    format!("appservice_invite:{id}:")
}

/// The remote invites waiting for an appservice, oldest first: (meta key, position, event id).
fn pending_invites(services: &Services, id: &str) -> Result<Vec<(String, u64, OwnedEventId)>> {
    let prefix = invite_prefix(id);
    let mut out = Vec::new();
    for entry in services.db.tables.meta.scan_prefix(prefix.clone().into_bytes()) {
        let (key, Be64(pos)) = entry?;
        let Some((_, event_id)) = key[prefix.len()..].split_once(':') else { continue };
        match EventId::parse(event_id) {
            Ok(event_id) => out.push((key.clone(), pos, event_id)),
            Err(_) => tracing::warn!(%key, "a queued remote invite has no valid event id"),
        }
        if out.len() == MAX_EVENTS {
            break;
        }
    }
    Ok(out)
}

/// Sends queued remote invites in one transaction (`r<first position>-<last position>`), then
/// forgets them.
async fn deliver_invites(
    services: &Services,
    http: &reqwest::Client,
    service: &Appservice,
    invites: &[(String, u64, OwnedEventId)],
) -> Result<()> {
    let id = &service.registration.id;
    let mut events = Vec::new();
    for (_, _, event_id) in invites {
        if let Some(event) = services.rooms.client_event(event_id)? {
            events.push(event);
        }
    }
    if !events.is_empty() {
        let (first, last) = (invites[0].1, invites[invites.len() - 1].1);
        let url = service.registration.url.as_deref().unwrap_or_default().trim_end_matches('/');
        let response = http
            .put(format!("{url}/_matrix/app/v1/transactions/r{first}-{last}"))
            .bearer_auth(&service.registration.hs_token)
            .json(&json!({ "events": events }))
            .send()
            .await
            .map_err(|e| Error::RemoteUnreachable(format!("appservice {id}: {e}")))?;
        if !response.status().is_success() {
            return Err(Error::RemoteUnreachable(format!("appservice {id} answered {}", response.status())));
        }
        tracing::debug!(appservice = %id, invites = events.len(), "remote invites delivered");
    }
    let mut batch = Batch::new();
    for (key, _, _) in invites {
        services.db.tables.meta.remove(&mut batch, key);
    }
    services.db.commit(batch)?;
    Ok(())
}

fn take_ephemeral(services: &Services, id: &str) -> Vec<Value> {
    services.appservice_sender.ephemeral.lock().expect("appservice ephemeral").remove(id).unwrap_or_default()
}

fn pos_key(id: &str) -> String {
    format!("appservice_pos:{id}")
}

fn txn_key(id: &str) -> String {
    format!("appservice_txn:{id}")
}

/// Creates the appservices' sender users, then starts one task per appservice that has a URL.
pub async fn start(services: Arc<Services>) -> Result<()> {
    for service in services.appservices.all() {
        if !services.users.exists(&service.sender)? {
            services.users.create(service.sender.localpart(), None, false).await?;
            tracing::info!(appservice = %service.registration.id, user = %service.sender, "created the appservice's user");
        }
        if service.registration.url.is_some() {
            tokio::spawn(run(services.clone(), service.registration.id.clone()));
        }
    }
    Ok(())
}

fn http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder().timeout(timeout).build().map_err(|e| Error::Internal(e.to_string()))
}

async fn run(services: Arc<Services>, id: String) {
    let Some(service) = services.appservices.get(&id).cloned() else { return };
    let http = match http_client(REQUEST_TIMEOUT) {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, appservice = %id, "no HTTP client: no transactions are sent");
            return;
        }
    };
    let mut stream = services.rooms.subscribe();
    let mut backoff = Duration::ZERO;
    // Ephemeral events of the transaction being tried: the same ones go with each retry.
    let mut ephemeral: Vec<Value> = Vec::new();
    let mut ephemeral_txn = 0u64;
    loop {
        let head = *stream.borrow_and_update();
        match pending_invites(&services, &id) {
            Ok(invites) if invites.is_empty() => {}
            Ok(invites) => {
                match deliver_invites(&services, &http, &service, &invites).await {
                    Ok(()) => backoff = Duration::ZERO,
                    Err(error) => {
                        backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                        tracing::warn!(%error, appservice = %id, retry_in = ?backoff, "remote invites to the appservice failed");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = services.appservice_sender.retry_now.notified() => {}
                        }
                    }
                }
                continue;
            }
            Err(error) => {
                tracing::error!(%error, appservice = %id, "reading the queued remote invites failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        }
        let done = match delivered(&services, &id, head) {
            Ok(done) => done,
            Err(error) => {
                tracing::error!(%error, appservice = %id, "reading the appservice position failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if ephemeral.is_empty() {
            ephemeral = take_ephemeral(&services, &id);
            ephemeral_txn += 1;
        }
        if head > done || !ephemeral.is_empty() {
            match deliver(&services, &http, &service, done, head, &ephemeral, ephemeral_txn).await {
                Ok(()) => {
                    backoff = Duration::ZERO;
                    ephemeral.clear();
                }
                Err(error) => {
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    tracing::warn!(%error, appservice = %id, retry_in = ?backoff, "a transaction to the appservice failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = services.appservice_sender.retry_now.notified() => {}
                    }
                }
            }
            continue;
        }
        let ready = services.appservice_sender.ephemeral_ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let ephemeral_queued =
            services.appservice_sender.ephemeral.lock().expect("appservice ephemeral").contains_key(&id);
        let queued = ephemeral_queued || pending_invites(&services, &id).is_ok_and(|invites| !invites.is_empty());
        if !queued {
            tokio::select! {
                changed = stream.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = &mut ready => {}
            }
        }
    }
}

/// The position delivered up to; an appservice seen for the first time starts at the head (it
/// gets what happens from its registration on, as with Synapse).
fn delivered(services: &Services, id: &str, head: u64) -> Result<u64> {
    let tables = &services.db.tables;
    if let Some(Be64(pos)) = tables.meta.get(&pos_key(id))? {
        return Ok(pos);
    }
    let mut batch = Batch::new();
    tables.meta.insert(&mut batch, &pos_key(id), &Be64(head));
    services.db.commit(batch)?;
    Ok(head)
}

/// Sends the next transaction after `done` (or the one in flight before a restart) and moves the
/// position past it once the appservice accepted it.
async fn deliver(
    services: &Services,
    http: &reqwest::Client,
    service: &Appservice,
    done: u64,
    head: u64,
    ephemeral: &[Value],
    ephemeral_txn: u64,
) -> Result<()> {
    let id = &service.registration.id;
    let tables = &services.db.tables;
    let in_flight = tables.meta.get(&txn_key(id))?.map(|Be64(end)| end);
    let (events, end) = if head > done || in_flight.is_some() {
        collect(services, service, done, in_flight.unwrap_or(head), in_flight.is_none())?
    } else {
        (Vec::new(), done)
    };
    if events.is_empty() && ephemeral.is_empty() {
        let mut batch = Batch::new();
        tables.meta.insert(&mut batch, &pos_key(id), &Be64(end));
        tables.meta.remove(&mut batch, &txn_key(id));
        services.db.write_unsynced(batch)?;
        return Ok(());
    }
    if in_flight.is_none() {
        let mut batch = Batch::new();
        tables.meta.insert(&mut batch, &txn_key(id), &Be64(end));
        services.db.commit(batch)?;
    }
    let url = service.registration.url.as_deref().unwrap_or_default().trim_end_matches('/');
    // Events-only transactions are named by the positions they cover (stable across restarts);
    // one carrying only ephemeral data by the server's start and a counter.
    let txn = if events.is_empty() {
        format!("e{}-{ephemeral_txn}", services.appservice_sender.started_ms())
    } else {
        format!("{}-{end}", done + 1)
    };
    let mut body = json!({ "events": events });
    // To-device messages (they name a device) travel apart from the EDUs (MSC4203).
    let (to_device, edus): (Vec<&Value>, Vec<&Value>) = ephemeral.iter().partition(|e| e.get("to_device_id").is_some());
    if !to_device.is_empty() {
        body["de.sorunome.msc2409.to_device"] = json!(to_device);
    }
    let ephemeral: Vec<Value> = edus.into_iter().cloned().collect();
    if !ephemeral.is_empty() {
        body["ephemeral"] = Value::from(ephemeral.to_vec());
        body["de.sorunome.msc2409.ephemeral"] = Value::from(ephemeral.to_vec());
    }
    let response = http
        .put(format!("{url}/_matrix/app/v1/transactions/{txn}"))
        .bearer_auth(&service.registration.hs_token)
        .json(&body)
        .send()
        .await
        .map_err(|e| Error::RemoteUnreachable(format!("appservice {id}: {e}")))?;
    if !response.status().is_success() {
        return Err(Error::RemoteUnreachable(format!("appservice {id} answered {}", response.status())));
    }
    let mut batch = Batch::new();
    tables.meta.insert(&mut batch, &pos_key(id), &Be64(end));
    tables.meta.remove(&mut batch, &txn_key(id));
    services.db.commit(batch)?;
    tracing::debug!(appservice = %id, %txn, events = events.len(), "transaction delivered");
    Ok(())
}

/// The events after `done` up to `end` the appservice is interested in, in stream order, and the
/// position the transaction ends at. With `may_stop_early`, stops after [`MAX_EVENTS`] events or
/// [`MAX_SCANNED`] positions; a transaction rebuilt after a restart covers exactly `done..=end`.
fn collect(
    services: &Services,
    service: &Appservice,
    done: u64,
    end: u64,
    may_stop_early: bool,
) -> Result<(Vec<Value>, u64)> {
    let tables = &services.db.tables;
    let mut events = Vec::new();
    let mut reached = end;
    let mut rooms: HashMap<OwnedRoomId, bool> = HashMap::new();
    for (scanned, entry) in tables.rooms.pos_eventid.scan_from(Vec::new(), Be64(done + 1).encode(), true).enumerate() {
        let (Be64(pos), event_id) = entry?;
        if pos > end {
            break;
        }
        if may_stop_early && (events.len() == MAX_EVENTS || scanned == MAX_SCANNED) {
            reached = pos - 1;
            break;
        }
        let Some(event) = services.rooms.client_event(&event_id)? else { continue };
        if interested(services, service, &mut rooms, &event)? {
            events.push(event);
        }
    }
    Ok((events, reached))
}

/// Spec: an appservice gets the events of rooms that match its room namespaces, that one of its
/// users is in, or that one of its users sent or is the target of.
fn interested(
    services: &Services,
    service: &Appservice,
    rooms: &mut HashMap<OwnedRoomId, bool>,
    event: &Value,
) -> Result<bool> {
    let claims =
        |field: &Value| field.as_str().and_then(|s| UserId::parse(s).ok()).is_some_and(|u| service.claims_user(&u));
    if claims(&event["sender"]) || (event["type"] == "m.room.member" && claims(&event["state_key"])) {
        return Ok(true);
    }
    let Some(room) = event["room_id"].as_str().and_then(|r| OwnedRoomId::try_from(r).ok()) else { return Ok(false) };
    room_interest(services, service, rooms, &room)
}

/// Whether the room concerns the appservice: it matches its room namespaces, holds one of its
/// users (joined or invited), or has a canonical alias in its alias namespaces.
fn room_interest(
    services: &Services,
    service: &Appservice,
    rooms: &mut HashMap<OwnedRoomId, bool>,
    room: &ruma::RoomId,
) -> Result<bool> {
    if let Some(known) = rooms.get(room) {
        return Ok(*known);
    }
    let room = room.to_owned();
    let snapshot = services.db.tables.rooms.roomid_room.get(&room)?.map(|r| r.0.snapshot);
    let key = (service.registration.id.clone(), room.clone());
    if let Some(snapshot) = snapshot {
        let cache = services.appservice_sender.interest.lock().expect("appservice interest");
        if let Some((at, known)) = cache.get(&key) {
            if *at == snapshot {
                rooms.insert(room, *known);
                return Ok(*known);
            }
        }
    }
    let mut answer = service.claims_room(&room);
    if !answer {
        answer =
            services.rooms.members(&room)?.iter().any(|(user, record)| {
                matches!(record.membership.as_str(), "join" | "invite") && service.claims_user(user)
            });
    }
    if !answer {
        if let Some(canonical) = services.rooms.state_event(&room, &StateEventType::RoomCanonicalAlias, "")? {
            let content: Value = serde_json::from_str(canonical.content.get()).unwrap_or_default();
            let alt = content["alt_aliases"].as_array().cloned().unwrap_or_default();
            answer = std::iter::once(&content["alias"])
                .chain(alt.iter())
                .filter_map(|a| a.as_str().and_then(|a| RoomAliasId::parse(a).ok()))
                .any(|alias| service.claims_alias(&alias));
        }
    }
    if let Some(snapshot) = snapshot {
        let mut cache = services.appservice_sender.interest.lock().expect("appservice interest");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(key, (snapshot, answer));
    }
    rooms.insert(room, answer);
    Ok(answer)
}

/// `POST /_matrix/app/v1/ping` on the appservice, for `POST /appservice/{id}/ping`: how long it
/// took, or the error the spec names for what went wrong.
pub async fn ping(services: &Services, service: &Appservice, transaction_id: Option<&str>) -> Result<Duration> {
    let Some(url) = service.registration.url.as_deref() else {
        return Err(Error::AppserviceUnreachable {
            status: 400,
            errcode: "M_URL_NOT_SET",
            message: "the application service has no URL".into(),
            extra: None,
        });
    };
    let http = http_client(QUERY_TIMEOUT)?;
    let mut body = json!({});
    if let Some(txn) = transaction_id {
        body["transaction_id"] = txn.into();
    }
    let started = Instant::now();
    let sent = http
        .post(format!("{}/_matrix/app/v1/ping", url.trim_end_matches('/')))
        .bearer_auth(&service.registration.hs_token)
        .json(&body)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return Err(Error::AppserviceUnreachable {
                status: 504,
                errcode: "M_CONNECTION_TIMEOUT",
                message: "the application service did not answer in time".into(),
                extra: None,
            })
        }
        Err(error) => {
            return Err(Error::AppserviceUnreachable {
                status: 502,
                errcode: "M_CONNECTION_FAILED",
                message: format!("cannot reach the application service: {error}"),
                extra: None,
            })
        }
    };
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(Error::AppserviceUnreachable {
            status: 502,
            errcode: "M_BAD_STATUS",
            message: format!("the application service answered {status}"),
            extra: Some(json!({ "status": status.as_u16(), "body": text })),
        });
    }
    services.appservice_sender.retry_now.notify_waiters();
    Ok(started.elapsed())
}

/// Asks the appservices whose namespaces hold `user` whether it exists
/// (`GET /_matrix/app/v1/users/{userId}`); the appservice creates it before answering 200.
pub async fn query_user(services: &Services, user: &UserId) -> bool {
    for service in services.appservices.all().iter().filter(|s| s.claims_user(user)) {
        if query(service, &format!("users/{}", encode_segment(user.as_str()))).await {
            return true;
        }
    }
    false
}

/// Asks the appservices whose namespaces hold `alias` to create the room it names
/// (`GET /_matrix/app/v1/rooms/{roomAlias}`).
pub async fn query_alias(services: &Services, alias: &RoomAliasId) -> bool {
    for service in services.appservices.all().iter().filter(|s| s.claims_alias(alias)) {
        if query(service, &format!("rooms/{}", encode_segment(alias.as_str()))).await {
            return true;
        }
    }
    false
}

/// `GET /_matrix/app/v1/thirdparty/{path}` on an appservice: its JSON answer, `None` when it
/// has no URL, cannot be reached or answers an error.
pub async fn thirdparty(service: &Appservice, path: &str) -> Option<Value> {
    let url = service.registration.url.as_deref()?;
    let http = http_client(QUERY_TIMEOUT).ok()?;
    let response = http
        .get(format!("{}/_matrix/app/v1/thirdparty/{path}", url.trim_end_matches('/')))
        .bearer_auth(&service.registration.hs_token)
        .send()
        .await
        .inspect_err(
            |error| tracing::warn!(%error, appservice = %service.registration.id, "a third-party lookup failed"),
        )
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

async fn query(service: &Appservice, path: &str) -> bool {
    let Some(url) = service.registration.url.as_deref() else { return false };
    let Ok(http) = http_client(QUERY_TIMEOUT) else { return false };
    let sent = http
        .get(format!("{}/_matrix/app/v1/{path}", url.trim_end_matches('/')))
        .bearer_auth(&service.registration.hs_token)
        .send()
        .await;
    match sent {
        Ok(response) => response.status().is_success(),
        Err(error) => {
            tracing::warn!(%error, appservice = %service.registration.id, "an appservice query failed");
            false
        }
    }
}

/// Percent-encodes a path segment (user ids and aliases hold `@`, `:` and `#`).
pub fn encode_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() * 3);
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::{json, Value};

    use super::*;

    /// An invite from another server into a room this server is not in (what the federation
    /// `/invite` handler records) reaches the appservice claiming the invitee, after a refused
    /// attempt, and is forgotten once accepted; an invite to anyone else is not queued.
    #[tokio::test]
    async fn remote_invites_reach_the_appservice() {
        use axum::{extract::Path, http::StatusCode, routing::put, Json};
        type Seen = Arc<Mutex<(usize, Vec<(String, Value)>)>>;
        let seen: Seen = Arc::default();
        let app = axum::Router::new().route(
            "/_matrix/app/v1/transactions/{txn}",
            put({
                let seen = seen.clone();
                move |Path(txn): Path<String>, Json(body): Json<Value>| async move {
                    let mut seen = seen.lock().unwrap();
                    seen.0 += 1;
                    if seen.0 == 1 {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    seen.1.push((txn, body));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

        let dir = tempfile::tempdir().unwrap();
        let registration = dir.path().join("workspace.yaml");
        std::fs::write(
            &registration,
            format!(
                "id: workspace\nurl: \"{url}\"\nas_token: as-t\nhs_token: hs-t\nsender_localpart: workspace\n\
                 namespaces:\n  users:\n    - exclusive: true\n      regex: \"@ws_.*:localhost\"\n"
            ),
        )
        .unwrap();
        let config = dir.path().join("homeserver.toml");
        std::fs::write(
            &config,
            format!(
                "server_name = \"localhost\"\n[database]\npath = \"{}\"\n[appservices]\nregistrations = [\"{}\"]\n",
                dir.path().join("db").display(),
                registration.display()
            ),
        )
        .unwrap();
        let services = crate::services::Services::open(crate::config::Config::load(Some(&config)).unwrap()).unwrap();
        start(services.clone()).await.unwrap();

        let room = RoomId::parse("!elsewhere:remote.example").unwrap();
        let invite = |invitee: &str, event_id: &str| {
            let object: ruma::CanonicalJsonObject = serde_json::from_value(json!({
                "type": "m.room.member", "room_id": room, "sender": "@alice:remote.example",
                "state_key": invitee, "content": { "membership": "invite" }, "origin_server_ts": 1,
                "unsigned": { "invite_room_state": [{ "type": "m.room.name", "state_key": "",
                    "sender": "@alice:remote.example", "content": { "name": "Projet" } }] },
            }))
            .unwrap();
            (UserId::parse(invitee).unwrap(), EventId::parse(event_id).unwrap(), object)
        };
        for (invitee, event_id) in [("@ws_bot:localhost", "$invite-bot"), ("@someone:localhost", "$invite-other")] {
            let (invitee, event_id, object) = invite(invitee, event_id);
            services.rooms.record_remote_membership(&room, &invitee, &event_id, &object, "invite").await.unwrap();
            queue_remote_invite(&services, &room, &invitee, &event_id).unwrap();
        }

        let deadline = Instant::now() + Duration::from_secs(20);
        let events = loop {
            let delivered = seen.lock().unwrap().1.iter().find(|(txn, _)| txn.starts_with('r')).cloned();
            if let Some((_, body)) = delivered {
                break body["events"].as_array().unwrap().clone();
            }
            assert!(Instant::now() < deadline, "the remote invite never reached the appservice");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(events.len(), 1, "only the appservice's user: {events:?}");
        let event = &events[0];
        assert_eq!(event["event_id"], "$invite-bot");
        assert_eq!(event["type"], "m.room.member");
        assert_eq!(event["state_key"], "@ws_bot:localhost");
        assert_eq!(event["room_id"], room.as_str());
        assert_eq!(event["content"]["membership"], "invite");
        assert_eq!(event["unsigned"]["invite_room_state"][0]["content"]["name"], "Projet");
        assert!(seen.lock().unwrap().0 >= 2, "the refused attempt was retried");
        while !pending_invites(&services, "workspace").unwrap().is_empty() {
            assert!(Instant::now() < deadline, "the delivered invite stays queued");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
