//! Delayed events (MSC4140), as Synapse serves them: an event a client schedules now and the
//! server sends later, unless the client restarts its timer (a heartbeat) or cancels it. Element
//! Call schedules the leave of its call membership this way, so a call member whose client
//! vanishes leaves the call.
//!
//! Records are durable, one column family per mapping: the record by delay id, the owner's list
//! (listing and the per-user limit), the send times in order (the timer), and, for state events,
//! the state key they will set (cancelled when *another* user sets it first, as Synapse does: a
//! client that updates its own call membership must keep its pending leave).
//!
//! Timers cost nothing while idle: one task sleeps until the first send time, woken early by a
//! [`Notify`] when the schedule changes. A due event goes through the one write path
//! ([`Rooms::append`](super::Rooms::append)) with a transaction id made from its delay id, which
//! is stored in the same batch as the event: an event sent just before a crash whose record was
//! not yet removed is found by that id when it is fired again after the restart, so it is sent
//! once, never twice, and never lost.

pub mod state;

use std::{sync::Arc, time::Duration};

use ruma::{OwnedDeviceId, OwnedEventId, RoomId, UserId};
use serde_json::{json, Value};
use tokio::sync::Notify;

pub use self::state::DelayedEvents;
pub use super::tables::Delayed;
use super::{NewEvent, TxnKey};
use crate::{
    config::DelayedEventsConfig,
    db::{
        codec::{prefix, Be64, Codec},
        Batch, Database,
    },
    error::{Error, Result},
    services::Services,
    time::now_ms,
};

impl Delayed {
    /// The answer of the list and get endpoints (Synapse's fields, and the older revision's
    /// `delay` and `running_since` for clients that still read those).
    pub fn to_json(&self, delay_id: &str) -> Value {
        let since = self.send_ts.saturating_sub(self.delay_ms);
        let mut out = json!({
            "delay_id": delay_id,
            "room_id": self.room_id,
            "type": self.kind,
            "delay_ms": self.delay_ms,
            "delayed_since_ts": since,
            "content": self.content,
            "delay": self.delay_ms,
            "running_since": since,
        });
        if let Some(key) = &self.state_key {
            out["state_key"] = json!(key);
        }
        out
    }
}

/// A refusal to schedule, which the client API answers in Synapse's terms.
#[derive(Debug)]
pub enum AddRefused {
    /// Delayed events are off (`[delayed_events]` absent): 403 M_FORBIDDEN.
    Disabled,
    /// Longer than `max_delay_ms`: 400 with the maximum.
    TooLong {
        requested_ms: u64,
        max_delay_ms: u64,
    },
    Other(Error),
}

impl From<Error> for AddRefused {
    fn from(error: Error) -> Self {
        Self::Other(error)
    }
}

/// The longest single sleep of the timer task: bounds how far a changed system clock can delay
/// an event; an idle server wakes once an hour for nothing.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// The device the events sent for a delay id are recorded under (with `delayed:<delay id>` as
/// transaction id), so that no client's device takes them for its own sends.
const DELAYED_DEVICE: &str = "org.matrix.msc4140";

/// The counter (in `metakey_count`) of how far the cancelling consumer read the stream.
const POS_KEY: &str = "delayed_events_pos";
/// How often the cancelling consumer records its position.
const POS_EVERY: Duration = Duration::from_secs(1);

fn due_key(send_ts: u64, delay_id: &str) -> Vec<u8> {
    let mut key = send_ts.to_be_bytes().to_vec();
    key.extend_from_slice(delay_id.as_bytes());
    key
}

/// A new delay id: it is a bearer capability (restart, cancel and send need nothing else), so
/// 24 characters from a CSPRNG (about 143 bits).
fn new_delay_id() -> String {
    use rand::RngExt;
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let random: String = (0..24).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    format!("hcd_{random}")
}

/// The transaction an event sent for `delay_id` is recorded under, with the event: a second
/// send of the same delay id (after a crash before its record went) finds it and appends nothing.
fn txn_key(record: &Delayed, delay_id: &str) -> TxnKey {
    TxnKey {
        user: record.owner.clone(),
        device: OwnedDeviceId::from(DELAYED_DEVICE),
        txn_id: delay_id.to_owned(),
        scope: "delayed".to_owned(),
    }
}

fn not_found() -> Error {
    Error::not_found("Delayed event not found")
}

impl DelayedEvents {
    /// `config` absent: nothing can be scheduled (what was scheduled before is still sent).
    pub fn new(db: Arc<Database>, config: Option<DelayedEventsConfig>) -> Self {
        Self { db, config, wake: Notify::new(), lock: tokio::sync::Mutex::new(()), firing: Default::default() }
    }

    pub fn config(&self) -> Option<&DelayedEventsConfig> {
        self.config.as_ref()
    }

    /// Schedules an event of `owner` in `room`, `delay_ms` from now, and returns its delay id.
    pub async fn add(
        &self,
        services: &Services,
        owner: &UserId,
        room: &RoomId,
        event: NewEvent,
        delay_ms: u64,
    ) -> std::result::Result<String, AddRefused> {
        let Some(config) = &self.config else { return Err(AddRefused::Disabled) };
        if delay_ms > config.max_delay_ms {
            return Err(AddRefused::TooLong { requested_ms: delay_ms, max_delay_ms: config.max_delay_ms });
        }
        if !services.rooms.exists(room)? || !services.rooms.is_joined(owner, room)? {
            return Err(Error::forbidden("you are not in this room").into());
        }
        let kind = event.kind.to_string();
        if kind.len() > 255 || event.state_key.as_ref().is_some_and(|k| k.len() > 255) {
            return Err(Error::TooLarge("an event type and a state key are at most 255 bytes".into()).into());
        }
        if serde_json::to_vec(&event.content).map_or(0, |c| c.len()) > super::MAX_PDU_BYTES {
            return Err(Error::TooLarge("the event content is too large".into()).into());
        }
        let _guard = self.lock.lock().await;
        let tables = &self.db.tables;
        let now = now_ms();
        let mine: Vec<String> = tables
            .rooms
            .useriddelayid_delayid
            .scan_prefix(prefix(&owner.to_owned()))
            .map(|entry| entry.map(|(_, id)| id))
            .collect::<std::result::Result<_, _>>()
            .map_err(Error::from)?;
        if mine.len() >= config.max_per_user {
            // Retry once the first of the owner's events has been sent, as Synapse answers.
            let mut first: Option<u64> = None;
            for id in &mine {
                if let Some(record) = self.get(id)? {
                    first = Some(first.map_or(record.send_ts, |f| f.min(record.send_ts)));
                }
            }
            let wait = first.map_or(0, |f| f.saturating_sub(now));
            return Err(Error::LimitExceeded { retry_after: Duration::from_millis(wait) }.into());
        }
        let delay_id = new_delay_id();
        let record = Delayed {
            owner: owner.to_owned(),
            room_id: room.to_owned(),
            kind,
            state_key: event.state_key,
            content: event.content,
            delay_ms,
            send_ts: now.saturating_add(delay_ms),
            scheduled_pos: self.db.current_count(),
        };
        let mut batch = Batch::new();
        self.insert(&mut batch, &delay_id, &record);
        self.db.commit(batch).map_err(Error::from)?;
        self.wake.notify_one();
        Ok(delay_id)
    }

    fn insert(&self, batch: &mut Batch, delay_id: &str, record: &Delayed) {
        let tables = &self.db.tables;
        let id = delay_id.to_owned();
        tables.rooms.delayid_delayed.insert(batch, &id, &crate::db::codec::Json(record.clone()));
        tables.rooms.useriddelayid_delayid.insert(batch, &(record.owner.clone(), id.clone()), &id);
        tables.rooms.duedelayid_delayid.insert(batch, &due_key(record.send_ts, delay_id), &id);
        if let Some(key) = &record.state_key {
            tables.rooms.roomidtypestatekeydelayid_delayid.insert(
                batch,
                &(record.room_id.clone(), record.kind.clone(), key.clone(), id.clone()),
                &id,
            );
        }
    }

    fn remove(&self, batch: &mut Batch, delay_id: &str, record: &Delayed) {
        let tables = &self.db.tables;
        let id = delay_id.to_owned();
        tables.rooms.delayid_delayed.remove(batch, &id);
        tables.rooms.useriddelayid_delayid.remove(batch, &(record.owner.clone(), id.clone()));
        tables.rooms.duedelayid_delayid.remove(batch, &due_key(record.send_ts, delay_id));
        if let Some(key) = &record.state_key {
            tables
                .rooms
                .roomidtypestatekeydelayid_delayid
                .remove(batch, &(record.room_id.clone(), record.kind.clone(), key.clone(), id));
        }
    }

    pub fn get(&self, delay_id: &str) -> Result<Option<Delayed>> {
        Ok(self.db.tables.rooms.delayid_delayed.get(&delay_id.to_owned())?.map(|j| j.0))
    }

    fn is_firing(&self, delay_id: &str) -> bool {
        self.firing.lock().expect("firing set").contains(delay_id)
    }

    /// The owner's scheduled events, soonest first.
    pub fn list(&self, owner: &UserId) -> Result<Vec<(String, Delayed)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.rooms.useriddelayid_delayid.scan_prefix(prefix(&owner.to_owned())) {
            let (_, id) = entry?;
            if self.is_firing(&id) {
                continue;
            }
            if let Some(record) = self.get(&id)? {
                out.push((id, record));
            }
        }
        out.sort_by_key(|(_, r)| r.send_ts);
        Ok(out)
    }

    /// Starts the event's delay again from now (404 once sent, cancelled or being sent).
    pub async fn restart(&self, delay_id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let record = self.get(delay_id)?.filter(|_| !self.is_firing(delay_id)).ok_or_else(not_found)?;
        let mut batch = Batch::new();
        self.remove(&mut batch, delay_id, &record);
        let record = Delayed { send_ts: now_ms().saturating_add(record.delay_ms), ..record };
        self.insert(&mut batch, delay_id, &record);
        self.db.commit(batch)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Drops the event without sending it.
    pub async fn cancel(&self, delay_id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let record = self.get(delay_id)?.filter(|_| !self.is_firing(delay_id)).ok_or_else(not_found)?;
        let mut batch = Batch::new();
        self.remove(&mut batch, delay_id, &record);
        self.db.commit(batch)?;
        self.wake.notify_one();
        Ok(())
    }

    /// Drops every scheduled event of `owner` (their account is being deactivated: nothing may
    /// be sent in their name afterwards, as Synapse does first thing). One being sent right now
    /// goes out as it is. Answers how many were dropped.
    pub async fn cancel_all_for(&self, owner: &UserId) -> Result<usize> {
        let _guard = self.lock.lock().await;
        let mut batch = Batch::new();
        let mut dropped = 0;
        for (delay_id, record) in self.list(owner)? {
            self.remove(&mut batch, &delay_id, &record);
            dropped += 1;
        }
        if dropped > 0 {
            self.db.commit(batch)?;
            self.wake.notify_one();
        }
        Ok(dropped)
    }

    /// Sends the event now instead of at its time.
    pub async fn send_now(&self, services: &Services, delay_id: &str) -> Result<()> {
        {
            let _guard = self.lock.lock().await;
            if self.get(delay_id)?.is_none() || !self.firing.lock().expect("firing set").insert(delay_id.to_owned()) {
                return Err(not_found());
            }
        }
        self.fire(services, delay_id).await;
        Ok(())
    }

    /// Sends a delayed event through the write path, then forgets it. Whatever the outcome (the
    /// owner left the room, the auth rules refuse it), the record goes, as in Synapse: a refused
    /// event would be refused again. The caller has put `delay_id` in `firing`.
    async fn fire(&self, services: &Services, delay_id: &str) {
        let outcome = self.fire_inner(services, delay_id).await;
        if let Err(error) = &outcome {
            tracing::warn!(delay_id, %error, "a delayed event could not be sent");
        }
        self.firing.lock().expect("firing set").remove(delay_id);
        self.wake.notify_one();
    }

    async fn fire_inner(&self, services: &Services, delay_id: &str) -> Result<Option<OwnedEventId>> {
        let Some(record) = self.get(delay_id)? else { return Ok(None) };
        let event = NewEvent {
            kind: record.kind.clone().into(),
            content: record.content.clone(),
            state_key: record.state_key.clone(),
            redacts: None,
        };
        let sent = services.rooms.append(&record.room_id, &record.owner, event, Some(txn_key(&record, delay_id))).await;
        let _guard = self.lock.lock().await;
        let mut batch = Batch::new();
        self.remove(&mut batch, delay_id, &record);
        self.db.commit(batch)?;
        sent.map(Some)
    }

    /// The first scheduled send time and its delay id.
    fn first_due(&self) -> Result<Option<(u64, String)>> {
        match self.db.tables.rooms.duedelayid_delayid.iter().next() {
            None => Ok(None),
            Some(entry) => {
                let (key, id) = entry?;
                let ts = u64::from_be_bytes(key[..8].try_into().map_err(|_| Error::Internal("bad due key".into()))?);
                Ok(Some((ts, id)))
            }
        }
    }

    /// Cancels the pending delayed state events of other users than `sender` for this state key,
    /// scheduled before `pos`.
    async fn cancel_for_state(
        &self,
        room: &RoomId,
        kind: &str,
        state_key: &str,
        sender: &UserId,
        pos: u64,
    ) -> Result<()> {
        let mut key_prefix = prefix(&room.to_owned());
        key_prefix.extend(prefix(&kind.to_owned()));
        key_prefix.extend(prefix(&state_key.to_owned()));
        let ids: Vec<String> = self
            .db
            .tables
            .rooms
            .roomidtypestatekeydelayid_delayid
            .scan_prefix(key_prefix)
            .map(|e| e.map(|(_, id)| id))
            .collect::<std::result::Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(());
        }
        let _guard = self.lock.lock().await;
        let mut batch = Batch::new();
        let mut cancelled = 0;
        for id in ids {
            if self.is_firing(&id) {
                continue;
            }
            let Some(record) = self.get(&id)? else { continue };
            if record.owner == sender || record.scheduled_pos >= pos {
                continue;
            }
            self.remove(&mut batch, &id, &record);
            cancelled += 1;
        }
        if cancelled > 0 {
            self.db.commit(batch)?;
            self.wake.notify_one();
            tracing::debug!(%room, kind, state_key, cancelled, "delayed state events cancelled by another user's state");
        }
        Ok(())
    }
}

/// Starts the timer task and the consumer that cancels delayed state events overtaken by another
/// user's state.
pub fn start(services: Arc<Services>) {
    tokio::spawn(timer(services.clone()));
    tokio::spawn(cancelling(services));
}

async fn timer(services: Arc<Services>) {
    let delayed = &services.delayed_events;
    loop {
        let wake = delayed.wake.notified();
        // One reading of the clock: read again below, it could pass `ts` in between, and the
        // subtraction would overflow (a panic ending the timer, or a wrap to the longest sleep).
        let now = now_ms();
        let sleep = match delayed.first_due() {
            Ok(Some((ts, id))) if ts <= now => {
                if delayed.firing.lock().expect("firing set").insert(id.clone()) {
                    delayed.fire(&services, &id).await;
                } else {
                    // Being sent by `send_now`, which wakes us when done.
                    wake.await;
                }
                continue;
            }
            Ok(Some((ts, _))) => Duration::from_millis(ts.saturating_sub(now)).min(MAX_SLEEP),
            Ok(None) => MAX_SLEEP,
            Err(error) => {
                tracing::error!(%error, "reading the delayed events schedule failed");
                Duration::from_secs(10)
            }
        };
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Tails the event stream from where it stopped (kept in `metakey_count`, so state set while the
/// server went down still cancels after the restart) and cancels, for each state event, the
/// pending delayed events of other users for the same state key.
async fn cancelling(services: Arc<Services>) {
    let tables = &services.db.tables;
    let mut stream = services.rooms.subscribe();
    let mut done = match tables.meta.get(&POS_KEY.to_owned()) {
        Ok(Some(Be64(pos))) => pos,
        _ => *stream.borrow(),
    };
    let mut recorded = std::time::Instant::now();
    loop {
        let head = *stream.borrow_and_update();
        if head > done {
            match cancel_range(&services, done, head).await {
                Ok(reached) => {
                    done = reached;
                    // The position only spares a restart re-reading events (a cancellation
                    // compares the record's own position, so reading one again changes
                    // nothing): it is written at most once a second, and not synced, rather
                    // than once per wake-up of a busy stream with an fsync each.
                    if recorded.elapsed() >= POS_EVERY {
                        recorded = std::time::Instant::now();
                        let mut batch = Batch::new();
                        tables.meta.insert(&mut batch, &POS_KEY.to_owned(), &Be64(done));
                        if let Err(error) = services.db.write_unsynced(batch) {
                            tracing::warn!(%error, "could not record the delayed events' stream position");
                        }
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "cancelling delayed state events failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            continue;
        }
        if stream.changed().await.is_err() {
            return;
        }
    }
}

/// Reads the events after `done` up to `head` (at most 1,000) and returns the position reached.
async fn cancel_range(services: &Services, done: u64, head: u64) -> Result<u64> {
    let tables = &services.db.tables;
    let nothing_pending = tables.rooms.roomidtypestatekeydelayid_delayid.iter().next().is_none();
    if nothing_pending {
        return Ok(head);
    }
    let mut reached = head;
    let mut seen = Vec::new();
    for (count, entry) in tables.rooms.pos_eventid.scan_from(Vec::new(), Be64(done + 1).encode(), true).enumerate() {
        let (Be64(pos), event_id) = entry?;
        if pos > head {
            break;
        }
        if count == 1000 {
            reached = pos - 1;
            break;
        }
        seen.push((pos, event_id));
    }
    for (pos, event_id) in seen {
        let Some(pdu) = services.rooms.pdu(&event_id)? else { continue };
        let (Some(room), Some(state_key)) = (pdu.room_id.as_ref(), pdu.state_key.as_ref()) else { continue };
        services.delayed_events.cancel_for_state(room, &pdu.kind.to_string(), state_key, &pdu.sender, pos).await?;
    }
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use ruma::{events::TimelineEventType, RoomVersionId};

    use super::*;
    use crate::{config::Config, rooms::create::CreateRoom};

    /// The crash the transaction id guards against: the event went out (appended with its
    /// transaction, in one write) but the server died before the delayed event's record was
    /// removed, so after the restart the record is due again. Sending it then appends nothing:
    /// the room's last event is still the one sent before the crash, and the record is gone.
    #[tokio::test]
    async fn an_event_sent_before_a_crash_is_not_sent_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.database.path = dir.path().join("db");
        config.delayed_events = Some(DelayedEventsConfig { max_delay_ms: 600_000, max_per_user: 100 });
        let services = Services::open(config).expect("services");
        let alice = services.users.create("alice", None, false).await.expect("alice");
        let room = services.rooms.create_room(&alice, CreateRoom::default(), &RoomVersionId::V12).await.expect("room");
        let leave = || NewEvent::message(TimelineEventType::from("m.test.leave"), json!({ "left": true }));
        let delayed = &services.delayed_events;
        let delay_id = delayed.add(&services, &alice, &room, leave(), 600_000).await.expect("scheduled");

        // Sent, then the crash: the record is still there.
        let record = delayed.get(&delay_id).unwrap().expect("the record");
        let sent = services.rooms.append(&room, &alice, leave(), Some(txn_key(&record, &delay_id))).await.unwrap();
        assert_eq!(services.rooms.room(&room).unwrap().unwrap().extremities, vec![sent.clone()]);

        // After the restart, the due record is fired again.
        delayed.send_now(&services, &delay_id).await.expect("fired");
        assert_eq!(services.rooms.room(&room).unwrap().unwrap().extremities, vec![sent], "nothing sent twice");
        assert!(delayed.get(&delay_id).unwrap().is_none(), "the record is gone");
        assert!(delayed.list(&alice).unwrap().is_empty());
    }
}
