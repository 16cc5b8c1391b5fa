//! The outbound side: one queue per destination server, a consumer of the event stream like sync.
//!
//! A dispatcher tails the stream and wakes the worker of every server a new local event concerns
//! (servers of the room's joined members, and the target's server of a membership change). Each
//! worker scans the stream from the position it has delivered up to (`servername_sentpos`, so a
//! restart resumes where it stopped), takes up to 50 PDUs and 100 EDUs (EDUs wait in
//! `servernamepos_edu`, or in memory for typing), sends one transaction at a time and only then
//! moves its position. A failed destination backs off (doubling, capped) without delaying any
//! other: every worker is its own task.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    api::federation::transactions::send_transaction_message, serde::Raw, MilliSecondsSinceUnixEpoch, OwnedEventId,
    OwnedRoomId, OwnedServerName, OwnedTransactionId, OwnedUserId, RoomId, ServerName, UserId,
};
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::{
    db::{
        codec::{prefix, Be64, Json},
        Batch, Database, Table,
    },
    error::Result,
    rooms::visibility::ServerWindow,
    services::Services,
};

pub(crate) const DISPATCHED: &str = "federation_dispatched";
const MAX_PDUS: usize = 50;
const MAX_EDUS: usize = 100;
/// How long an idle worker sleeps before looking again without being woken.
const IDLE_RECHECK: Duration = Duration::from_secs(60);

pub struct Sender {
    db: Arc<Database>,
    workers: Mutex<HashMap<OwnedServerName, Arc<Notify>>>,
    /// EDUs that are not worth keeping across a restart (typing), per destination.
    volatile: Mutex<HashMap<OwnedServerName, Vec<Value>>>,
    spawner: Mutex<Option<tokio::sync::mpsc::UnboundedSender<OwnedServerName>>>,
}

impl Sender {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db, workers: Default::default(), volatile: Default::default(), spawner: Mutex::new(None) }
    }

    /// Wakes (starting if needed) the worker of `server`.
    pub fn wake(&self, server: &ServerName) {
        if let Some(notify) = self.workers.lock().expect("sender workers").get(server) {
            notify.notify_one();
            return;
        }
        if let Some(spawner) = self.spawner.lock().expect("sender spawner").as_ref() {
            let _ = spawner.send(server.to_owned());
        }
    }

    /// Queues an EDU for servers, durably (receipts, device lists, to-device messages).
    pub fn queue_edu(&self, servers: &[OwnedServerName], edu_type: &str, content: Value) -> Result<()> {
        if servers.is_empty() {
            return Ok(());
        }
        let edu = json!({ "edu_type": edu_type, "content": content });
        let mut batch = Batch::new();
        for server in servers {
            let n = self.db.next_count(&mut batch);
            self.db.tables.federation.servernamepos_edu.insert(
                &mut batch,
                &(server.clone(), Be64(n)),
                &Json(edu.clone()),
            );
        }
        self.db.commit(batch)?;
        for server in servers {
            self.wake(server);
        }
        Ok(())
    }

    /// Queues a PDU we relay for another server (a join, leave or knock made through us), durably.
    pub fn queue_pdu(&self, servers: &[OwnedServerName], pdu: Value) -> Result<()> {
        self.queue_edu(servers, "__pdu", pdu)
    }

    /// Queues an EDU kept in memory only (typing notifications go stale anyway).
    pub fn queue_volatile(&self, servers: &[OwnedServerName], edu_type: &str, content: Value) {
        let edu = json!({ "edu_type": edu_type, "content": content });
        {
            let mut volatile = self.volatile.lock().expect("volatile EDUs");
            for server in servers {
                let queue = volatile.entry(server.clone()).or_default();
                if queue.len() < MAX_EDUS * 10 {
                    queue.push(edu.clone());
                }
            }
        }
        for server in servers {
            self.wake(server);
        }
    }
}

/// Starts the dispatcher and a worker for every destination that has a position already or EDUs
/// waiting (one never delivered to has no position yet: a to-device message for a server that
/// was down).
pub fn start(services: Arc<Services>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<OwnedServerName>();
    *services.federation.sender.spawner.lock().expect("sender spawner") = Some(tx);
    let mut known: Vec<OwnedServerName> =
        services.db.tables.federation.servername_sentpos.iter().filter_map(|r| r.ok().map(|(s, _)| s)).collect();
    for server in queued_edu_destinations(&services) {
        if !known.contains(&server) {
            known.push(server);
        }
    }
    let spawning = services.clone();
    tokio::spawn(async move {
        for server in known {
            spawn_worker(&spawning, server);
        }
        while let Some(server) = rx.recv().await {
            spawn_worker(&spawning, server);
        }
    });
    tokio::spawn(dispatch(services));
}

/// The destinations with EDUs waiting in `servernamepos_edu`: one read each, every read starting
/// past the keys of the destination before.
fn queued_edu_destinations(services: &Services) -> Vec<OwnedServerName> {
    let table = &services.db.tables.federation.servernamepos_edu;
    let mut servers = Vec::new();
    let mut start = Vec::new();
    while let Some(Ok(((server, _), _))) = table.scan_from(Vec::new(), start.clone(), true).next() {
        start = prefix(&server);
        start.extend([0xFF; 9]);
        servers.push(server);
    }
    servers
}

fn spawn_worker(services: &Arc<Services>, server: OwnedServerName) {
    let sender = &services.federation.sender;
    let notify = {
        let mut workers = sender.workers.lock().expect("sender workers");
        if let Some(existing) = workers.get(&server) {
            existing.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        workers.insert(server.clone(), notify.clone());
        notify
    };
    tokio::spawn(worker(services.clone(), server, notify));
}

/// The destinations of a local event: servers with joined members, and a membership target's.
///
/// `kind` and `state_key` are the event's: a membership change also goes to its target's server.
fn destinations(services: &Services, room: &RoomId, kind: &str, state_key: Option<&str>) -> Vec<OwnedServerName> {
    let mut servers = super::receive::servers_in_room(services, room).unwrap_or_default();
    if kind == "m.room.member" {
        if let Some(target) = state_key.and_then(|k| <&UserId>::try_from(k).ok()) {
            let server = target.server_name();
            if server != services.federation.server_name() && !servers.iter().any(|s| s == server) {
                servers.push(server.to_owned());
            }
        }
    }
    servers.retain(|s| services.federation.allowed(s) && super::receive::acl_allows(services, room, s));
    servers
}

/// Whether a stream entry is a local event for `server`: one sent while the server had a
/// joined member in the room (or a membership change of one of its users), decided at that
/// event and not when the queue gets to it — a worker behind the stream (a backoff, a slow
/// peer) would otherwise send a server that joined since the history before its join, which
/// its members may not be allowed to see (it fetches what they may through `/backfill`).
fn event_for(services: &Services, pos: u64, server: &ServerName) -> Option<(OwnedEventId, Vec<u8>)> {
    let event_id = services.db.tables.rooms.pos_eventid.get(&Be64(pos)).ok()??;
    let json = services.rooms.pdu_json(&event_id).ok()??;
    let pdu = crate::rooms::pdu::Pdu::from_json(event_id.clone(), &json).ok()?;
    if pdu.sender.server_name() != services.federation.server_name() {
        return None;
    }
    let room = services.rooms.meta(&event_id).ok()??.room_id;
    let target = pdu.kind == ruma::events::TimelineEventType::RoomMember
        && pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()).is_some_and(|u| u.server_name() == server);
    let owed = target
        || had_member_at(services, &room, server, pos).unwrap_or_else(|error| {
            // The history unreadable: the current members decide, as before the history existed.
            tracing::warn!(%room, %server, %error, "reading the room's membership history failed");
            destinations(services, &room, pdu.kind.to_string().as_str(), pdu.state_key.as_deref())
                .iter()
                .any(|s| s == server)
        });
    (owed && services.federation.allowed(server) && super::receive::acl_allows(services, &room, server))
        .then_some((event_id, json))
}

/// Each room's [`ServerWindow`]s by server, with the room's state snapshot they were read at.
pub(crate) type ServerWindows = Mutex<HashMap<OwnedRoomId, (u64, Arc<HashMap<OwnedServerName, ServerWindow>>)>>;

/// Whether `server` had a joined member in `room` when the event at `pos` was sent. The room's
/// membership history is read once per state snapshot (memberships change it) for every server
/// at once: each destination's worker asks of every local event.
fn had_member_at(services: &Services, room: &RoomId, server: &ServerName, pos: u64) -> Result<bool> {
    let snapshot = services.db.tables.rooms.roomid_room.get(&room.to_owned())?.map(|r| r.0.snapshot);
    let cache = &services.federation.server_windows;
    let cached = cache.lock().expect("server windows").get(room).filter(|(at, _)| Some(*at) == snapshot).cloned();
    let windows = match cached {
        Some((_, windows)) => windows,
        None => {
            let windows = Arc::new(services.rooms.server_windows(room)?);
            if let Some(snapshot) = snapshot {
                let mut cache = cache.lock().expect("server windows");
                if cache.len() > 10_000 {
                    cache.clear();
                }
                cache.insert(room.to_owned(), (snapshot, windows.clone()));
            }
            windows
        }
    };
    match windows.get(server) {
        Some(window) => Ok(window.had_member_at(pos)),
        // No membership of its users has a position (one known only through a state resolution
        // has none): such a server is owed what it is in the room for now.
        None => Ok(super::receive::servers_in_room(services, room)?.iter().any(|s| s == server)),
    }
}

/// What waits for `server`: how many local events for it lie past the position it has received
/// up to (among the next `scan` stream entries), and the `origin_server_ts` of the oldest.
pub fn waiting(services: &Services, server: &ServerName, scan: usize) -> (u64, Option<u64>) {
    let Ok(Some(Be64(sent))) = services.db.tables.federation.servername_sentpos.get(&server.to_owned()) else {
        return (0, None);
    };
    let (mut count, mut oldest) = (0, None);
    let start = Be64(sent.saturating_add(1)).0.to_be_bytes().to_vec();
    for entry in services.db.tables.rooms.pos_eventid.scan_from(Vec::new(), start, true).take(scan) {
        let Ok((Be64(pos), _)) = entry else { break };
        let Some((_, json)) = event_for(services, pos, server) else { continue };
        count += 1;
        if oldest.is_none() {
            oldest = serde_json::from_slice::<Value>(&json).ok().and_then(|v| v["origin_server_ts"].as_u64());
        }
    }
    (count, oldest)
}

/// The entries of a table of our users by stream position (`pos_keychange`, `pos_presence`)
/// after `done` up to `head`, with nothing read while the table's generation is still `seen`:
/// the generation at which a scan last found every entry up to the head. A scan that stopped
/// at an entry beyond the head (or at an error) keeps none, so a later wake reads again.
fn local_entries(
    table: &Table<Be64, OwnedUserId>,
    ours: &ServerName,
    done: u64,
    head: u64,
    seen: &mut Option<u64>,
) -> Vec<(u64, OwnedUserId)> {
    let generation = table.generation();
    if *seen == Some(generation) {
        return Vec::new();
    }
    let mut entries = Vec::new();
    let mut complete = true;
    for entry in table.scan_from(Vec::new(), (done + 1).to_be_bytes().to_vec(), true) {
        match entry {
            Ok((Be64(pos), user)) if pos <= head => {
                if user.server_name() == ours {
                    entries.push((pos, user));
                }
            }
            _ => {
                complete = false;
                break;
            }
        }
    }
    *seen = complete.then_some(generation);
    entries
}

async fn dispatch(services: Arc<Services>) {
    let mut stream = services.rooms.subscribe();
    let tables = &services.db.tables;
    let mut done = tables.meta.get(&DISPATCHED.to_owned()).ok().flatten().map(|Be64(p)| p).unwrap_or(0);
    if done == 0 {
        done = *stream.borrow();
    }
    let mut saved = Instant::now();
    // The generation of the device-change and presence tables when a scan last found all their
    // entries up to the head: while it holds, nothing was written to them since, and their
    // scans (an iterator each, most of the dispatcher's cost when every wake is one message)
    // are skipped. Not kept when a scan stopped at an entry beyond the head, which a later
    // wake must find.
    let (mut keychanges_seen, mut presence_seen) = (None, None);
    loop {
        let head = *stream.borrow_and_update();
        if head > done {
            for entry in tables.rooms.pos_eventid.scan_from(Vec::new(), Be64(done + 1).0.to_be_bytes().to_vec(), true) {
                let Ok((Be64(pos), event_id)) = entry else { break };
                if pos > head {
                    break;
                }
                let Ok(Some(json)) = services.rooms.pdu_json(&event_id) else { continue };
                if services.network.has_domain_map() {
                    if let Ok(pdu) = crate::rooms::pdu::Pdu::from_json(event_id.clone(), &json) {
                        super::threepid::on_event(&services, &pdu);
                    }
                }
                let Ok(head) = serde_json::from_slice::<crate::rooms::pdu::Head>(&json) else { continue };
                let Ok(sender) = <&UserId>::try_from(&*head.sender) else { continue };
                if sender.server_name() != services.federation.server_name() {
                    continue;
                }
                let room = match head.room_id.as_deref().map(<&RoomId>::try_from) {
                    Some(Ok(room)) => room.to_owned(),
                    Some(Err(_)) => continue,
                    // A room version 12 create event: its room id is not in it.
                    None => match services.rooms.meta(&event_id) {
                        Ok(Some(meta)) => meta.room_id,
                        _ => continue,
                    },
                };
                for server in destinations(&services, &room, &head.kind, head.state_key.as_deref()) {
                    // A destination met for the first time starts just before this event.
                    if tables.federation.servername_sentpos.get(&server).ok().flatten().is_none() {
                        let mut batch = Batch::new();
                        tables.federation.servername_sentpos.insert(&mut batch, &server, &Be64(pos - 1));
                        if let Err(error) = services.db.commit(batch) {
                            tracing::error!(%server, %error, "recording a new destination failed");
                        }
                    }
                    services.federation.sender.wake(&server);
                }
            }
            let ours = services.federation.server_name();
            for (pos, user) in local_entries(&tables.keys.pos_keychange, ours, done, head, &mut keychanges_seen) {
                if let Err(error) = announce_device_change(&services, pos, &user) {
                    tracing::error!(%user, %error, "queueing a device list update failed");
                }
            }
            let present: Vec<OwnedUserId> =
                local_entries(&tables.ephemeral.pos_presence, ours, done, head, &mut presence_seen)
                    .into_iter()
                    .map(|(_, user)| user)
                    .collect();
            if let Err(error) = announce_presence(&services, &present) {
                tracing::error!(%error, "queueing presence updates failed");
            }
            done = head;
            // Written when the stream is idle or once a second: under load a write per wake was
            // 1 % of the server's time. After a crash what follows the position written is
            // dispatched again: destinations woken again, device list updates and presence
            // queued again (stream ids let their receivers drop what they had).
            let more = stream.has_changed().unwrap_or(false);
            if !more || saved.elapsed() >= Duration::from_secs(1) {
                let mut batch = Batch::new();
                tables.meta.insert(&mut batch, &DISPATCHED.to_owned(), &Be64(done));
                if let Err(error) = services.db.write_unsynced(batch) {
                    tracing::error!(%error, "recording the dispatched position failed");
                }
                saved = Instant::now();
            }
        }
        if stream.changed().await.is_err() {
            return;
        }
    }
}

/// The servers sharing a room with `user` (allowed, and not refused by the room's ACL).
fn servers_sharing_with(services: &Services, user: &UserId) -> Result<Vec<OwnedServerName>> {
    let mut servers = Vec::new();
    for room in services.rooms.rooms_of(user, "join")? {
        for server in super::receive::servers_in_room(services, &room)? {
            if services.federation.allowed(&server)
                && super::receive::acl_allows(services, &room, &server)
                && !servers.contains(&server)
            {
                servers.push(server);
            }
        }
    }
    Ok(servers)
}

/// Sends the presence of local users whose presence moved to the servers sharing a room with
/// them: one `m.presence` EDU per server, kept in memory (presence is soon stale anyway).
fn announce_presence(services: &Services, users: &[ruma::OwnedUserId]) -> Result<()> {
    let mut per_server: HashMap<OwnedServerName, Vec<Value>> = HashMap::new();
    let now = crate::time::now_ms();
    for user in users {
        let Some(record) = services.presence.get(user)? else { continue };
        let mut update = json!({
            "user_id": user,
            "presence": record.presence,
            "last_active_ago": now.saturating_sub(record.last_active_ts),
            "currently_active": record.presence == "online",
        });
        if let Some(message) = &record.status_msg {
            update["status_msg"] = json!(message);
        }
        for server in servers_sharing_with(services, user)? {
            per_server.entry(server).or_default().push(update.clone());
        }
    }
    for (server, push) in per_server {
        for chunk in push.chunks(MAX_EDUS) {
            services.federation.sender.queue_volatile(
                std::slice::from_ref(&server),
                "m.presence",
                json!({ "push": chunk }),
            );
        }
    }
    Ok(())
}

/// Tells the servers sharing a room with `user` that their devices or cross-signing keys changed.
///
/// The `m.device_list_update` names no previous stream id, which makes the receiver fetch the
/// whole list from `/user/devices` (Synapse and the spec's "resync" path): the device stream
/// records which user changed, not which device, and a full list is never wrong.
fn announce_device_change(services: &Services, pos: u64, user: &UserId) -> Result<()> {
    let servers = servers_sharing_with(services, user)?;
    if servers.is_empty() {
        return Ok(());
    }
    let devices = services.users.devices(user)?;
    let device_id = devices.first().map(|(id, _)| id.to_string()).unwrap_or_default();
    let update = json!({
        "user_id": user,
        "device_id": device_id,
        "stream_id": pos,
        "prev_id": [],
        "deleted": devices.is_empty(),
    });
    let sender = &services.federation.sender;
    sender.queue_edu(&servers, "m.device_list_update", update)?;
    let wanted = std::collections::BTreeMap::from([(user.to_owned(), Vec::new())]);
    let mut keys = services.keys.query(&services.users, user, &wanted)?;
    if let Some(cross) = keys.cross_signing.remove(user).filter(|c| c.master.is_some()) {
        let mut content = json!({ "user_id": user, "master_key": cross.master });
        if let Some(self_signing) = cross.self_signing {
            content["self_signing_key"] = self_signing;
        }
        sender.queue_edu(&servers, "m.signing_key_update", content)?;
    }
    Ok(())
}

async fn worker(services: Arc<Services>, server: OwnedServerName, notify: Arc<Notify>) {
    let fed = &services.federation;
    let tables = &services.db.tables;
    loop {
        // New events wake the worker during a backoff without ending it; an admin's reset
        // (which clears the backoff, then wakes) does.
        while let Some(wait) = fed.client.backing_off(&server) {
            let _ = tokio::time::timeout(wait, notify.notified()).await;
        }
        let notified = notify.notified();
        let head = *services.rooms.subscribe().borrow();
        let from = tables.federation.servername_sentpos.get(&server).ok().flatten().map(|Be64(p)| p).unwrap_or(head);
        let mut pdus = Vec::new();
        let mut scanned = from;
        for entry in tables.rooms.pos_eventid.scan_from(Vec::new(), (from + 1).to_be_bytes().to_vec(), true) {
            let Ok((Be64(pos), _)) = entry else { break };
            if pos > head || pdus.len() >= MAX_PDUS {
                break;
            }
            scanned = pos;
            if let Some((event_id, json)) = event_for(&services, pos, &server) {
                match services.rooms.for_peers(&event_id, json) {
                    Ok(json) => pdus.push(json),
                    Err(error) => tracing::error!(%event_id, %error, "signing a stored event failed"),
                }
            }
        }
        if pdus.len() < MAX_PDUS && scanned < head {
            scanned = head;
        }
        let mut edus = Vec::new();
        let mut edu_keys = Vec::new();
        for entry in tables.federation.servernamepos_edu.scan_prefix(prefix(&server)) {
            let Ok((key, Json(edu))) = entry else { break };
            if edu["edu_type"] == "__pdu" {
                if pdus.len() >= MAX_PDUS {
                    continue;
                }
                pdus.push(serde_json::to_vec(&edu["content"]).unwrap_or_default());
            } else {
                if edus.len() >= MAX_EDUS {
                    continue;
                }
                edus.push(edu);
            }
            edu_keys.push(key);
            if edus.len() >= MAX_EDUS && pdus.len() >= MAX_PDUS {
                break;
            }
        }
        let volatile: Vec<Value> = {
            let mut map = fed.sender.volatile.lock().expect("volatile EDUs");
            let queue = map.entry(server.clone()).or_default();
            let room = MAX_EDUS.saturating_sub(edus.len()).min(queue.len());
            queue.drain(..room).collect()
        };
        edus.extend(volatile);
        if pdus.is_empty() && edus.is_empty() {
            if scanned != from {
                let mut batch = Batch::new();
                tables.federation.servername_sentpos.insert(&mut batch, &server, &Be64(scanned));
                if let Err(error) = services.db.write_unsynced(batch) {
                    tracing::error!(%server, %error, "recording the delivered position failed");
                }
            }
            let _ = tokio::time::timeout(IDLE_RECHECK, notified).await;
            continue;
        }
        let txn_id: OwnedTransactionId = format!("{}-{}-{}", from, scanned, crate::users::random_password()).into();
        let mut request = send_transaction_message::v1::Request::new(
            txn_id,
            fed.server_name().to_owned(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = pdus
            .iter()
            .filter_map(|json| {
                serde_json::value::RawValue::from_string(String::from_utf8_lossy(json).into_owned()).ok()
            })
            .collect();
        request.edus =
            edus.iter().filter_map(|edu| serde_json::value::to_raw_value(edu).ok().map(Raw::from_json)).collect();
        let span = tracing::info_span!(
            "federation.send_transaction",
            otel.kind = "client",
            destination = %server,
            txn_id = %request.transaction_id,
            pdus = request.pdus.len(),
            edus = request.edus.len()
        );
        match tracing::Instrument::instrument(fed.send(&server, request), span).await {
            Ok(response) => {
                for (event_id, result) in response.pdus {
                    if let Err(error) = result {
                        tracing::info!(%server, %event_id, %error, "the destination refused a PDU");
                    }
                }
                let mut batch = Batch::new();
                tables.federation.servername_sentpos.insert(&mut batch, &server, &Be64(scanned));
                for key in &edu_keys {
                    tables.federation.servernamepos_edu.remove(&mut batch, key);
                }
                // Not synced: after a power cut the peer gets this transaction's content again,
                // which it drops (it dedupes PDUs by id and to-device messages by message id).
                if let Err(error) = services.db.write_unsynced(batch) {
                    tracing::error!(%error, "recording a delivery failed");
                }
            }
            Err(error) => {
                tracing::info!(%server, %error, "sending a transaction failed; backing off");
                if fed.client.backing_off(&server).is_none() {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
