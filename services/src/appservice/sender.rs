//! What the server sends its appservices: transactions of events (one more consumer of the event
//! stream, like sync and the federation sender), pings, and queries for users and aliases.
//!
//! Each appservice has one task that scans the stream from the position it has delivered up to
//! (`meta` key `appservice_pos:<id>`), keeps the events it is interested in (spec: its users send
//! or are members of the room, or the room matches its namespaces) and sends up to [`MAX_EVENTS`]
//! of them in one `PUT /_matrix/app/v1/transactions/{txnId}`, with the ephemeral data queued for
//! it (MSC2409 typing, receipts, presence; MSC4203 to-device messages). An appservice registered
//! with `org.matrix.msc3202: true` also gets, from the same positions, the device list changes
//! it is interested in (the device list stream, `pos_keychange`) and the one-time key counts and
//! unused fallback key types of its users' devices whose keys changed (queued by the key server
//! in `appserviceidpos_keycounts`, in the batch of the change).
//!
//! Before the first attempt the whole transaction — id, end position, body — is recorded
//! (`appserviceid_txn`), so every retry, before and after a restart, sends the same id with the
//! same body and the appservice's own dedupe by id applies: nothing lost, nothing repeated. Only
//! a success moves the position. Failures back off, doubling, capped.
//!
//! An invite from another server into a room this server is not in is no event of the stream
//! (`Rooms::record_remote_membership` keeps it aside for the invitee's sync): the federation
//! invite handler queues it with [`queue_remote_invite`] (`meta` keys `appservice_invite:<id>:…`,
//! durable) and the appservice's task sends it in a transaction of its own before the stream's.

pub mod state;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{
    events::StateEventType, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId,
};
use serde_json::{json, Value};

pub use self::state::AppserviceSender;
use super::{tables::Transaction, Appservice};
use crate::{
    db::{
        codec::{prefix, Be64, Codec, Json},
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
/// EDUs, and to-device messages, per transaction (Synapse's bound).
const MAX_EPHEMERAL_PER_TXN: usize = 100;
/// Users whose devices changed (`pos_keychange` entries) looked at per transaction (MSC3202).
const MAX_DEVICE_LIST_USERS: usize = 1_000;
/// Devices whose key counts one transaction carries (MSC3202).
const MAX_KEY_DEVICES: usize = 1_000;

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

/// Takes the ephemeral data for the appservice's next transaction: up to
/// [`MAX_EPHEMERAL_PER_TXN`] EDUs and as many to-device messages, oldest first; the rest wait for
/// the next one.
fn take_ephemeral(services: &Services, id: &str) -> Vec<Value> {
    let mut queues = services.appservice_sender.ephemeral.lock().expect("appservice ephemeral");
    let Some(queue) = queues.get_mut(id) else { return Vec::new() };
    let (mut edus, mut to_device) = (0, 0);
    let mut taken = Vec::new();
    queue.retain(|event| {
        let count = if event.get("to_device_id").is_some() { &mut to_device } else { &mut edus };
        if *count == MAX_EPHEMERAL_PER_TXN {
            return true;
        }
        *count += 1;
        taken.push(event.clone());
        false
    });
    if queue.is_empty() {
        queues.remove(id);
    }
    taken
}

/// Where a transaction in flight before bodies were kept ends (`meta`): after an upgrade, that
/// transaction is rebuilt over exactly the same positions, so it keeps its id and its events.
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
    let mut ephemeral_txns = 0u64;
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
        let ready = services.appservice_sender.ephemeral_ready.notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        match deliver(&services, &http, &service, done, head, &mut ephemeral_txns).await {
            Ok(true) => {
                backoff = Duration::ZERO;
                continue;
            }
            Ok(false) => {}
            Err(error) => {
                backoff = (backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                tracing::warn!(%error, appservice = %id, retry_in = ?backoff, "a transaction to the appservice failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = services.appservice_sender.retry_now.notified() => {}
                }
                continue;
            }
        }
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
    if let Some(Be64(pos)) = tables.meta.get(&super::pos_key(id))? {
        return Ok(pos);
    }
    let mut batch = Batch::new();
    tables.meta.insert(&mut batch, &super::pos_key(id), &Be64(head));
    services.db.commit(batch)?;
    Ok(head)
}

/// Sends the transaction in flight, or builds the next one after `done` and sends it; once the
/// appservice accepted it, moves the position past it. Returns whether there was anything to do.
async fn deliver(
    services: &Services,
    http: &reqwest::Client,
    service: &Appservice,
    done: u64,
    head: u64,
    ephemeral_txns: &mut u64,
) -> Result<bool> {
    let id = &service.registration.id;
    let tables = &services.db.tables;
    let txn = match tables.appservice.appserviceid_txn.get(id)? {
        Some(Json(txn)) => txn,
        None => {
            let legacy_end = tables.meta.get(&txn_key(id))?.map(|Be64(end)| end);
            if head <= done && legacy_end.is_none() && !has_ephemeral(services, id) {
                return Ok(false);
            }
            let (txn, empty) = build(services, service, done, head, legacy_end, ephemeral_txns)?;
            let mut batch = Batch::new();
            tables.meta.remove(&mut batch, &txn_key(id));
            if empty {
                // Nothing of interest in these positions: past them, no transaction.
                finish(services, &mut batch, id, txn.end.max(done))?;
                services.db.write_unsynced(batch)?;
                return Ok(true);
            }
            let stored = Json(txn);
            tables.appservice.appserviceid_txn.insert(&mut batch, id, &stored);
            // Not synced: the transaction in flight and the position survive the process
            // being killed (the operating system has the write); only a power cut can lose
            // them, and the events are then sent again, which an appservice must expect of a
            // homeserver anyway. An fsync per transaction stalled a runtime thread and every
            // other write behind it.
            services.db.write_unsynced(batch)?;
            stored.0
        }
    };
    let url = service.registration.url.as_deref().unwrap_or_default().trim_end_matches('/');
    let response = http
        .put(format!("{url}/_matrix/app/v1/transactions/{}", txn.txn_id))
        .bearer_auth(&service.registration.hs_token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(txn.body.get().to_owned())
        .send()
        .await
        .map_err(|e| Error::RemoteUnreachable(format!("appservice {id}: {e}")))?;
    if !response.status().is_success() {
        return Err(Error::RemoteUnreachable(format!("appservice {id} answered {}", response.status())));
    }
    let mut batch = Batch::new();
    tables.appservice.appserviceid_txn.remove(&mut batch, id);
    finish(services, &mut batch, id, txn.end.max(done))?;
    services.db.write_unsynced(batch)?;
    tracing::debug!(appservice = %id, txn = %txn.txn_id, "transaction delivered");
    Ok(true)
}

fn has_ephemeral(services: &Services, id: &str) -> bool {
    services.appservice_sender.ephemeral.lock().expect("appservice ephemeral").contains_key(id)
}

/// Moves the appservice's position to `end`, dropping the key count changes up to it (the
/// transaction carried them).
fn finish(services: &Services, batch: &mut Batch, id: &str, end: u64) -> Result<()> {
    let tables = &services.db.tables;
    tables.meta.insert(batch, &super::pos_key(id), &Be64(end));
    let queued = &tables.appservice.appserviceidpos_keycounts;
    for entry in queued.scan_prefix(prefix(&id.to_owned())) {
        let (key, _) = entry?;
        if key.1 .0 > end {
            break;
        }
        queued.remove(batch, &key);
    }
    Ok(())
}

/// The next transaction after `done`: what the positions up to `head` hold for the appservice
/// (bounded; a transaction from before bodies were kept covers exactly up to `legacy_end`) and
/// the ephemeral data queued for it. Transactions covering positions are named by them (unique
/// and stable); one carrying only ephemeral data by the server's start and a counter.
/// With it, whether it is empty (no events and nothing else: nothing to send).
fn build(
    services: &Services,
    service: &Appservice,
    done: u64,
    head: u64,
    legacy_end: Option<u64>,
    ephemeral_txns: &mut u64,
) -> Result<(Transaction, bool)> {
    let collected = if head > done || legacy_end.is_some() {
        collect(services, service, done, legacy_end.unwrap_or(head), legacy_end.is_none())?
    } else {
        Collected { end: done, ..Collected::default() }
    };
    let ephemeral = take_ephemeral(services, &service.registration.id);
    // Moved in, not through `json!`, which would serialize every event into a copy.
    let mut body = Value::Object(serde_json::Map::new());
    // To-device messages (they name a device) travel apart from the EDUs (MSC4203).
    let (to_device, edus): (Vec<Value>, Vec<Value>) =
        ephemeral.into_iter().partition(|e| e.get("to_device_id").is_some());
    if !to_device.is_empty() {
        body["de.sorunome.msc2409.to_device"] = Value::from(to_device);
    }
    if !edus.is_empty() {
        body["ephemeral"] = Value::from(edus.clone());
        body["de.sorunome.msc2409.ephemeral"] = Value::from(edus);
    }
    if !collected.changed.is_empty() || !collected.left.is_empty() {
        body["org.matrix.msc3202.device_lists"] = json!({ "changed": collected.changed, "left": collected.left });
    }
    let mut counts: BTreeMap<&str, BTreeMap<&str, Value>> = BTreeMap::new();
    let mut fallbacks: BTreeMap<&str, BTreeMap<&str, Value>> = BTreeMap::new();
    for (user, device) in &collected.key_devices {
        if services.users.device(user, device)?.is_none() {
            continue;
        }
        let (u, d) = (user.as_str(), device.as_str());
        counts.entry(u).or_default().insert(d, json!(services.keys.one_time_key_counts(user, device)?));
        fallbacks.entry(u).or_default().insert(d, json!(services.keys.unused_fallback_key_types(user, device)?));
    }
    if !counts.is_empty() {
        // Both of Synapse's names for the counts: appservices read one or the other.
        body["org.matrix.msc3202.device_one_time_keys_count"] = json!(counts);
        body["org.matrix.msc3202.device_one_time_key_counts"] = json!(counts);
        body["org.matrix.msc3202.device_unused_fallback_key_types"] = json!(fallbacks);
    }
    let txn_id = if collected.end > done {
        format!("{}-{}", done + 1, collected.end)
    } else {
        *ephemeral_txns += 1;
        format!("e{}-{}", services.appservice_sender.started_ms(), ephemeral_txns)
    };
    // Nothing but an empty list of events: no transaction to send.
    let rest = match body {
        Value::Object(rest) => rest,
        _ => serde_json::Map::new(),
    };
    let empty = collected.events.is_empty() && rest.is_empty();
    let body = body_json(&collected.events, rest)?;
    Ok((Transaction { txn_id, end: collected.end, body }, empty))
}

/// A transaction's body: `events` (client events as JSON text, copied in as they are) and the
/// other members.
fn body_json(events: &[String], rest: serde_json::Map<String, Value>) -> Result<Box<serde_json::value::RawValue>> {
    let mut out = String::with_capacity(events.iter().map(|e| e.len() + 1).sum::<usize>() + 64);
    out.push_str("{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(event);
    }
    out.push(']');
    for (key, value) in rest.iter().filter(|(key, _)| *key != "events") {
        out.push(',');
        out.push_str(&serde_json::to_string(key).map_err(|e| Error::Internal(e.to_string()))?);
        out.push(':');
        out.push_str(&serde_json::to_string(value).map_err(|e| Error::Internal(e.to_string()))?);
    }
    out.push('}');
    serde_json::value::RawValue::from_string(out).map_err(|e| Error::Internal(e.to_string()))
}

/// An event of interest, as sent, and what MSC3202's device lists read of it.
struct Kept {
    pos: u64,
    json: String,
    /// A membership event's target and membership.
    member: Option<(OwnedUserId, String)>,
}

/// What the stream positions of a transaction hold for the appservice.
#[derive(Default)]
struct Collected {
    /// The events it is interested in, in stream order, as client events in JSON.
    events: Vec<String>,
    /// MSC3202: users whose devices it must fetch again, and users it no longer shares a room
    /// with.
    changed: BTreeSet<OwnedUserId>,
    left: BTreeSet<OwnedUserId>,
    /// MSC3202: devices of its users whose one-time or fallback keys changed.
    key_devices: BTreeSet<(OwnedUserId, OwnedDeviceId)>,
    /// The position the transaction ends at.
    end: u64,
}

/// What the positions after `done` up to `end` hold for the appservice: its events, and with
/// MSC3202 the device list changes it is interested in and its users' devices whose key counts
/// changed. With `may_stop_early`, stops at [`MAX_EVENTS`] events, [`MAX_SCANNED`] positions,
/// [`MAX_DEVICE_LIST_USERS`] key changes or [`MAX_KEY_DEVICES`] devices; a transaction rebuilt
/// after an upgrade covers exactly `done..=end`.
fn collect(services: &Services, service: &Appservice, done: u64, end: u64, may_stop_early: bool) -> Result<Collected> {
    let tables = &services.db.tables;
    let mut events = Vec::new();
    let mut reached = end;
    let mut rooms: HashMap<OwnedRoomId, bool> = HashMap::new();
    for (scanned, entry) in tables.rooms.pos_eventid.scan_from(Vec::new(), Be64(done + 1).encode(), true).enumerate() {
        let (Be64(pos), event_id) = entry?;
        if pos > reached {
            break;
        }
        if may_stop_early && (events.len() == MAX_EVENTS || scanned == MAX_SCANNED) {
            reached = pos - 1;
            break;
        }
        let Some(json) = services.rooms.client_event_json(&event_id)? else { continue };
        let Ok(head) = serde_json::from_str::<crate::rooms::pdu::Head<'_>>(&json) else { continue };
        if interested(services, service, &mut rooms, &head)? {
            let member = (head.kind == "m.room.member")
                .then(|| head.state_key.as_deref().and_then(|u| UserId::parse(u).ok()))
                .flatten()
                .map(|user| (user, head.content.membership.clone().unwrap_or_default()));
            events.push(Kept { pos, json, member });
        }
    }
    let id = &service.registration.id;
    let mut key_devices = Vec::new();
    let start = (id.clone(), Be64(done + 1)).encode();
    for entry in tables.appservice.appserviceidpos_keycounts.scan_from(prefix(id), start, true) {
        let ((_, Be64(pos)), Json(devices)) = entry?;
        if pos > reached {
            break;
        }
        if may_stop_early && !key_devices.is_empty() && key_devices.len() + devices.len() > MAX_KEY_DEVICES {
            reached = pos - 1;
            break;
        }
        key_devices.extend(devices);
    }
    let mut key_changes = Vec::new();
    if service.registration.msc3202 {
        for entry in tables.keys.pos_keychange.scan_from(Vec::new(), Be64(done + 1).encode(), true) {
            let (Be64(pos), user) = entry?;
            if pos > reached {
                break;
            }
            if may_stop_early && key_changes.len() == MAX_DEVICE_LIST_USERS {
                reached = pos - 1;
                break;
            }
            key_changes.push(user);
        }
    }
    events.retain(|kept| kept.pos <= reached);
    let mut collected = Collected { end: reached, ..Collected::default() };
    if service.registration.msc3202 {
        collected.key_devices = key_devices.into_iter().collect();
        device_lists(services, service, &mut rooms, &events, key_changes, &mut collected)?;
    }
    collected.events = events.into_iter().map(|kept| kept.json).collect();
    Ok(collected)
}

/// MSC3202's `device_lists`, as sync tells a client (Synapse tells only the first kind):
/// `changed`, the users whose devices or keys changed (`pos_keychange`) and the users who joined
/// a room, that the appservice is interested in — its own users, and the members of a room that
/// concerns it; `left`, the users who left or were banned from such a room and no longer share
/// one with it. `key_changes` may hold any user of the stream, `events` only events of interest.
fn device_lists(
    services: &Services,
    service: &Appservice,
    rooms: &mut HashMap<OwnedRoomId, bool>,
    events: &[Kept],
    key_changes: Vec<OwnedUserId>,
    collected: &mut Collected,
) -> Result<()> {
    let mut joined: BTreeSet<OwnedUserId> = key_changes.into_iter().collect();
    let mut gone = BTreeSet::new();
    for (member, membership) in events.iter().filter_map(|kept| kept.member.clone()) {
        match membership.as_str() {
            "join" => {
                joined.insert(member);
            }
            "leave" | "ban" => {
                gone.insert(member);
            }
            _ => {}
        }
    }
    let mut interested_in = |user: &UserId| -> Result<bool> {
        if service.claims_user(user) {
            return Ok(true);
        }
        for room in services.rooms.rooms_of(user, "join")? {
            if room_interest(services, service, rooms, &room)? {
                return Ok(true);
            }
        }
        Ok(false)
    };
    for user in joined {
        if interested_in(&user)? {
            collected.changed.insert(user);
        }
    }
    for user in gone {
        if !collected.changed.contains(&user) && !interested_in(&user)? {
            collected.left.insert(user);
        }
    }
    Ok(())
}

/// Spec: an appservice gets the events of rooms that match its room namespaces, that one of its
/// users is in, or that one of its users sent or is the target of.
fn interested(
    services: &Services,
    service: &Appservice,
    rooms: &mut HashMap<OwnedRoomId, bool>,
    event: &crate::rooms::pdu::Head<'_>,
) -> Result<bool> {
    let claims =
        |field: Option<&str>| field.and_then(|s| UserId::parse(s).ok()).is_some_and(|u| service.claims_user(&u));
    if claims(Some(&event.sender)) || (event.kind == "m.room.member" && claims(event.state_key.as_deref())) {
        return Ok(true);
    }
    let Some(room) = event.room_id.as_deref().and_then(|r| OwnedRoomId::try_from(r).ok()) else { return Ok(false) };
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
