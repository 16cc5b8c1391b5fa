//! The pusher sender: delivers notifications to push gateways (Push Gateway API,
//! `POST {url}` = `/_matrix/push/v1/notify`). The evaluator queues one entry per (pusher,
//! notifying event) in the batch that records the notification, so nothing is lost across a
//! crash; an entry leaves the queue once its gateway answered 200 (a crash in between resends
//! that one notification). A gateway that fails is retried with exponential backoff without
//! holding up the others; pushkeys a gateway rejects lose their pusher.

pub mod state;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ruma::{OwnedRoomId, UserId};
use serde_json::{json, Value};

pub use self::state::{PushSender, PusherKey};
use crate::{
    db::{
        codec::{prefix, prefix2, Be64, Json},
        Batch,
    },
    error::Result,
    services::Services,
};

/// Notifications sent to one pusher per round, oldest first.
const PER_ROUND: usize = 100;
/// Gateways contacted at once.
const CONCURRENT_GATEWAYS: usize = 32;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Queues `pos` (an event of `room` that notifies `user`) for each of the user's pushers, into
/// the evaluator's batch; returns whether anything was queued.
pub fn enqueue(services: &Services, batch: &mut Batch, user: &UserId, room: &OwnedRoomId, pos: u64) -> Result<bool> {
    if !services.push.may_push(user) {
        return Ok(false);
    }
    let tables = &services.db.tables;
    let mut queued = false;
    for entry in tables.push.useridpushkey_pusher.scan_prefix(prefix(&user.to_owned())) {
        let ((user, app_id, pushkey), _) = entry?;
        tables.push.pusherpos_pending.insert(batch, &(user, app_id, pushkey, Be64(pos)), room);
        queued = true;
    }
    Ok(queued)
}

pub fn start(services: Arc<Services>) {
    tokio::spawn(run(services));
}

async fn run(services: Arc<Services>) {
    let http = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "no HTTP client for push gateways: pushes are not sent");
            return;
        }
    };
    loop {
        let woken = services.push_sender.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let next_retry = match round(&services, &http).await {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(%error, "a push round failed");
                Some(FIRST_BACKOFF)
            }
        };
        match next_retry {
            Some(wait) => {
                let _ = tokio::time::timeout(wait, woken).await;
            }
            None => woken.await,
        }
    }
}

/// Sends what is queued for every pusher not backing off; returns when to look again for the
/// ones that are (none: wait for a wake-up).
async fn round(services: &Arc<Services>, http: &reqwest::Client) -> Result<Option<Duration>> {
    // One seek per pusher with something queued: its first PER_ROUND entries, or none at all
    // while it backs off (a gateway down for hours does not make every round read its backlog).
    let tables = &services.db.tables;
    let now = Instant::now();
    let mut next: Option<Duration> = None;
    let mut ready: Vec<(PusherKey, Vec<(u64, OwnedRoomId)>)> = Vec::new();
    let mut start = Vec::new();
    loop {
        let Some(entry) = tables.push.pusherpos_pending.scan_from(Vec::new(), start.clone(), true).next() else {
            break;
        };
        let ((user, app_id, pushkey, _), _) = entry?;
        let key: PusherKey = (user, app_id, pushkey);
        let mut own = prefix(&key.0);
        own.extend(prefix2(&key.1, &key.2));
        // Past every position of this pusher: its prefix, then more than any 8-byte position.
        start = own.clone();
        start.extend([0xFF; 8]);
        start.push(0);
        let waiting = services.push_sender.backoff.lock().expect("push backoff").get(&key).map(|(until, _)| *until);
        if let Some(until) = waiting.filter(|until| *until > now) {
            let wait = until - now;
            next = Some(next.map_or(wait, |n| n.min(wait)));
            continue;
        }
        let mut entries = Vec::new();
        for entry in tables.push.pusherpos_pending.scan_prefix(own).take(PER_ROUND) {
            let ((_, _, _, Be64(pos)), room) = entry?;
            entries.push((pos, room));
        }
        ready.push((key, entries));
    }
    let sends = ready.into_iter().map(|(key, entries)| {
        let (services, http) = (services.clone(), http.clone());
        async move { deliver(&services, &http, key, entries).await }
    });
    use futures::StreamExt;
    let outcomes: Vec<Option<Duration>> =
        futures::stream::iter(sends).buffer_unordered(CONCURRENT_GATEWAYS).collect().await;
    for wait in outcomes.into_iter().flatten() {
        next = Some(next.map_or(wait, |n| n.min(wait)));
    }
    Ok(next)
}

/// Sends one pusher's queued notifications in order; returns its backoff when its gateway failed.
async fn deliver(
    services: &Services,
    http: &reqwest::Client,
    key: PusherKey,
    entries: Vec<(u64, OwnedRoomId)>,
) -> Option<Duration> {
    let tables = &services.db.tables;
    let Ok(Some(Json(record))) = tables.push.useridpushkey_pusher.get(&key) else {
        // The pusher is gone: its queue goes with it.
        let mut batch = Batch::new();
        for (pos, _) in &entries {
            tables
                .push
                .pusherpos_pending
                .remove(&mut batch, &(key.0.clone(), key.1.clone(), key.2.clone(), Be64(*pos)));
        }
        let _ = services.db.write_unsynced(batch);
        return None;
    };
    let url = record.pusher["data"]["url"].as_str().unwrap_or_default().to_owned();
    for (pos, room) in entries {
        let pending = (key.0.clone(), key.1.clone(), key.2.clone(), Be64(pos));
        let body = match notification(services, &key, &record, pos, &room) {
            Ok(Some(body)) => body,
            Ok(None) => {
                // The event or its notification is gone (redacted, purged): nothing to send.
                let mut batch = Batch::new();
                tables.push.pusherpos_pending.remove(&mut batch, &pending);
                let _ = services.db.write_unsynced(batch);
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "a push notification could not be built");
                return Some(fail(services, &key));
            }
        };
        let answer = http.post(&url).json(&body).send().await;
        let rejected: Vec<String> = match answer {
            Ok(response) if response.status().is_success() => {
                let v: Value = response.json().await.unwrap_or_default();
                v["rejected"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_owned)).collect()
            }
            Ok(response) => {
                tracing::info!(user = %key.0, %url, status = %response.status(), "the push gateway refused a notification");
                return Some(fail(services, &key));
            }
            Err(error) => {
                tracing::info!(user = %key.0, %url, %error, "the push gateway is unreachable");
                return Some(fail(services, &key));
            }
        };
        services.push_sender.backoff.lock().expect("push backoff").remove(&key);
        let mut batch = Batch::new();
        tables.push.pusherpos_pending.remove(&mut batch, &pending);
        let drop_pusher = rejected.contains(&key.2);
        if drop_pusher {
            tracing::info!(user = %key.0, pushkey = %key.2, "the push gateway rejected the pushkey: pusher removed");
            tables.push.useridpushkey_pusher.remove(&mut batch, &key);
            tables.push.appidpushkey_userid.remove(&mut batch, &(key.1.clone(), key.2.clone(), key.0.clone()));
        }
        if let Err(error) = services.db.commit(batch) {
            tracing::error!(%error, "recording a push delivery failed");
            return Some(FIRST_BACKOFF);
        }
        if drop_pusher {
            return None;
        }
    }
    None
}

/// Doubles the pusher's backoff (from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`]); returns it.
fn fail(services: &Services, key: &PusherKey) -> Duration {
    let mut backoff = services.push_sender.backoff.lock().expect("push backoff");
    let wait = backoff.get(key).map_or(FIRST_BACKOFF, |(_, last)| (*last * 2).min(MAX_BACKOFF));
    backoff.insert(key.clone(), (Instant::now() + wait, wait));
    wait
}

/// The Push Gateway API body for one event and one pusher (`event_id_only` format: ids and
/// counts only).
fn notification(
    services: &Services,
    key: &PusherKey,
    pusher: &super::pushers::PusherRecord,
    pos: u64,
    room: &OwnedRoomId,
) -> Result<Option<Value>> {
    let tables = &services.db.tables;
    let (user, app_id, pushkey) = key;
    let Some(record) = tables.push.useridroomidpos_notification.get(&(user.clone(), room.clone(), Be64(pos)))? else {
        return Ok(None);
    };
    let Some(event_id) = tables.rooms.roomidpos_eventid.get(&(room.clone(), Be64(pos)))? else { return Ok(None) };
    let Some(event) = services.rooms.client_event(&event_id)? else { return Ok(None) };
    let mut unread = 0;
    for joined in services.rooms.rooms_of(user, "join")? {
        unread += crate::push::unread_counts(services, &joined, user)?.0;
    }
    let mut tweaks = serde_json::Map::new();
    for action in &record.actions {
        if let ruma::push::Action::SetTweak(tweak) = action {
            if let Ok(Value::Object(t)) = serde_json::to_value(tweak) {
                if let (Some(Value::String(name)), value) = (t.get("set_tweak"), t.get("value")) {
                    tweaks.insert(name.clone(), value.cloned().unwrap_or(Value::Bool(true)));
                }
            }
        }
    }
    let mut data = pusher.pusher["data"].as_object().cloned().unwrap_or_default();
    data.remove("url");
    let event_id_only = data.get("format").and_then(Value::as_str) == Some("event_id_only");
    let high = record.actions.iter().any(|a| a.is_highlight()) || tweaks.contains_key("sound");
    let mut body = json!({
        "event_id": event_id,
        "room_id": room,
        "counts": { "unread": unread },
        "prio": if high { "high" } else { "low" },
        "devices": [{
            "app_id": app_id,
            "pushkey": pushkey,
            "pushkey_ts": pusher.created_ms / 1000,
            "data": data,
            "tweaks": tweaks,
        }],
    });
    if !event_id_only {
        body["type"] = event["type"].clone();
        body["sender"] = event["sender"].clone();
        if event.get("content").is_some() {
            body["content"] = event["content"].clone();
        }
        if let Some(name) = services.rooms.state_event(room, &ruma::events::StateEventType::RoomName, "")? {
            let content: Value = serde_json::from_str(name.content.get()).unwrap_or_default();
            if let Some(name) = content["name"].as_str() {
                body["room_name"] = json!(name);
            }
        }
        if event["type"] == "m.room.member" {
            body["user_is_target"] = json!(event["state_key"].as_str() == Some(user.as_str()));
        }
    }
    Ok(Some(json!({ "notification": body })))
}
