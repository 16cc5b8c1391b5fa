//! Push rules evaluated once per event and local member, when the event enters the stream.
//!
//! A consumer of the event stream (like the federation sender): for each new timeline event it
//! runs every local member's rules and records, for those it notifies, the actions together with
//! running totals per (user, room). Unread counts are then two lookups whatever the backlog —
//! the totals now minus the totals at the user's read receipt — and `/notifications` and the
//! pushers read the recorded actions instead of evaluating again. The evaluated position is
//! written in the same batch as the records, so a crash resumes exactly where it stopped.

pub mod state;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    events::StateEventType,
    push::{Action, FlattenedJson, PushConditionPowerLevelsCtx, PushConditionRoomCtx, Ruleset},
    serde::Raw,
    Int, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
};
use serde_json::{value::RawValue, Value};
use tokio::sync::watch;

pub use self::state::{CachedRules, Evaluator};
pub use super::tables::{NotificationRecord, ThreadTotal};
use super::tables::{NotifyFold, TotalsAt};
use crate::{
    db::{
        codec::{prefix2, Be64, Codec, Json},
        Batch,
    },
    error::Result,
    services::Services,
};

/// Meta key of the stream position evaluated up to.
const EVALUATED: &str = "push_evaluated";
/// Events evaluated per committed batch while catching up.
const CHUNK: usize = 500;
/// Notifications recorded per committed batch, at most (give or take one event's): 500 events of
/// a room of 300 members made one write of 150,000 records, tens of megabytes held at once.
const RECORDS_PER_BATCH: usize = 10_000;
/// Longest a sync waits for the evaluator to reach its position before answering anyway.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// A user's running totals in a room: all notifications, and those of the main timeline, and
/// whether the main timeline's are stored apart. They are only once they differ (a thread reply
/// notified the user in the room): until then the main timeline's totals are the room's, and
/// an absent record says so, which spares a write per user and room notified.
#[derive(Clone, Copy)]
struct Totals {
    all: (u64, u64),
    main: (u64, u64),
    main_stored: bool,
}

/// What a user has unread in a room: (notification, highlight) counts of the main timeline and
/// of each thread with something unread, each after the user's receipts that cover it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Unread {
    pub main: (u64, u64),
    pub threads: Vec<(String, (u64, u64))>,
}

impl Unread {
    /// The room's counts when the client does not ask for them per thread.
    pub fn total(&self) -> (u64, u64) {
        self.threads.iter().fold(self.main, |(n, h), (_, (tn, th))| (n + tn, h + th))
    }
}

impl Evaluator {
    pub fn new(db: &crate::db::Database) -> Self {
        let done = db.tables.meta.get(&EVALUATED.to_owned()).ok().flatten().map_or(0, |Be64(p)| p);
        let may_push =
            db.tables.push.useridpushkey_pusher.iter().filter_map(|e| e.ok().map(|((user, _, _), _)| user)).collect();
        Self {
            rules: Mutex::default(),
            evaluated: watch::channel(done).0,
            may_push: Mutex::new(may_push),
            pusher_writes: Mutex::default(),
        }
    }

    /// Records that `user` may have pushers; called before a pusher is stored.
    pub(crate) fn add_pusher_owner(&self, user: &UserId) {
        self.may_push.lock().expect("pusher owners").insert(user.to_owned());
    }

    pub(crate) fn may_push(&self, user: &UserId) -> bool {
        self.may_push.lock().expect("pusher owners").contains(user)
    }

    /// The user's rules, cached until they change.
    pub fn ruleset(&self, services: &Services, user: &UserId) -> Result<Arc<Ruleset>> {
        Ok(self.cached(services, user)?.rules)
    }

    fn cached(&self, services: &Services, user: &UserId) -> Result<CachedRules> {
        if let Some(rules) = self.rules.lock().expect("rules cache").get(user) {
            return Ok(rules.clone());
        }
        let rules = super::stored_ruleset(services, user)?;
        // Rules compare by id only, so compare what they serialize to (once per cache fill).
        let default = serde_json::to_value(&rules).ok() == serde_json::to_value(Ruleset::server_default(user)).ok();
        let shared = Arc::new(shared_defaults(&rules));
        let reads_whole_event = reads_whole_event(&rules);
        let entry = CachedRules { rules: Arc::new(rules), default, shared, reads_whole_event };
        let mut cache = self.rules.lock().expect("rules cache");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(user.to_owned(), entry.clone());
        Ok(entry)
    }

    pub fn forget_rules(&self, user: &UserId) {
        self.rules.lock().expect("rules cache").remove(user);
    }

    /// Waits (a bounded time) until every event up to `pos` is evaluated, so counts read next
    /// include them.
    pub async fn caught_up(&self, pos: u64) {
        let mut rx = self.evaluated.subscribe();
        let _ = tokio::time::timeout(CATCH_UP_WAIT, rx.wait_for(|done| *done >= pos)).await;
    }
}

/// Slots of the server-default rules, at most this many.
const SHARED_SLOTS: usize = 64;

/// For each rule of `rules` (in `Ruleset::iter` order), its slot when it is exactly the spec's
/// default rule of that id for any user: the same as in the defaults of two unrelated users
/// (which sets aside the rules that name the user, `.m.rule.invite_for_me` and
/// `.m.rule.is_user_mention`), and not changed by the user (enabled, actions and conditions
/// are all compared). No default rule reads the member's display name; the context's other
/// parts (the room's member count and power levels) are the same for every member.
fn shared_defaults(rules: &Ruleset) -> Vec<Option<u8>> {
    fn by_id(rules: &Ruleset) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        if let Ok(Value::Object(kinds)) = serde_json::to_value(rules) {
            for rule in kinds.values().filter_map(Value::as_array).flatten() {
                if let Some(id) = rule["rule_id"].as_str().filter(|id| id.starts_with('.')) {
                    out.push((id.to_owned(), rule.clone()));
                }
            }
        }
        out
    }
    let [one, other] = ["@one:one.invalid", "@other:other.invalid"]
        .map(|user| by_id(&Ruleset::server_default(&UserId::parse(user).expect("a user id"))));
    let mine: HashMap<String, Value> = by_id(rules).into_iter().collect();
    let slot = |id: &str| -> Option<u8> {
        let (slot, (_, rule)) = one.iter().enumerate().find(|(_, (known, _))| known == id)?;
        let same = mine.get(id) == Some(rule) && other.iter().any(|(known, r)| known == id && r == rule);
        (same && slot < SHARED_SLOTS).then_some(slot as u8)
    };
    rules.iter().map(|rule| slot(rule.rule_id())).collect()
}

/// (notification count, highlight count) of a room for the user: notifying events after the
/// user's read receipts, exact at any backlog.
pub fn unread_counts(services: &Services, room: &RoomId, user: &UserId) -> Result<(u64, u64)> {
    Ok(unread(services, room, user)?.total())
}

/// The user's unread counts in a room, main timeline and threads apart. An unthreaded receipt
/// covers every thread up to its event; a receipt with `thread_id` `"main"` or a thread root
/// covers that one. Each figure is the running total now minus the total at the receipt: a few
/// seeks per room (and per thread with notifications after the unthreaded receipt), whatever
/// the backlog. Where old records went (`NotifyFold`), the fold says which totals the receipt
/// subtracts; a pruning run that changes a fold while the counts are read is seen by the fold
/// table's generation, and the counts are read again.
pub fn unread(services: &Services, room: &RoomId, user: &UserId) -> Result<Unread> {
    let folds = &services.db.tables.push.useridroomidthread_notifyfold;
    loop {
        let generation = folds.generation();
        let out = unread_once(services, room, user)?;
        if folds.generation() == generation {
            return Ok(out);
        }
    }
}

fn unread_once(services: &Services, room: &RoomId, user: &UserId) -> Result<Unread> {
    let tables = &services.db.tables;
    let key = (user.to_owned(), room.to_owned());
    let Some(Json(all)) = tables.push.useridroomid_notifytotal.get(&key)? else { return Ok(Unread::default()) };
    let receipts = &services.receipts;
    let unthreaded = receipts.read_position(room, user)?.unwrap_or(0);
    let main_read = unthreaded.max(receipts.read_position_in(room, user, Some("main"))?.unwrap_or(0));
    let main_now = tables.push.useridroomid_mainnotifytotal.get(&key)?.map_or(all, |Json(t)| t);
    let main_then = match main_totals_at(services, user, room, main_read)? {
        TotalsAt::Kept(totals) => totals,
        TotalsAt::Record(pos) => {
            let start = (user.to_owned(), room.to_owned(), Be64(pos)).encode();
            match tables.push.useridroomidpos_notification.scan_from(prefix2(&key.0, &key.1), start, false).next() {
                Some(entry) => {
                    let (_, record) = entry?;
                    record.main.unwrap_or((record.notify, record.highlight))
                }
                None => (0, 0),
            }
        }
    };
    let mut out = Unread {
        main: (main_now.0.saturating_sub(main_then.0), main_now.1.saturating_sub(main_then.1)),
        threads: Vec::new(),
    };
    for entry in tables.push.useridroomidthread_notifytotal.scan_prefix(prefix2(&key.0, &key.1)) {
        let ((_, _, root), Json(total)) = entry?;
        if total.last_pos <= unthreaded {
            continue;
        }
        let read = unthreaded.max(receipts.read_position_in(room, user, Some(&root))?.unwrap_or(0));
        if total.last_pos <= read {
            continue;
        }
        let then = match thread_totals_at(services, user, room, &root, read)? {
            TotalsAt::Kept(totals) => totals,
            TotalsAt::Record(pos) => {
                let start = (user.to_owned(), room.to_owned(), root.clone(), Be64(pos)).encode();
                let mut thread_prefix = prefix2(&key.0, &key.1);
                thread_prefix.extend(crate::db::codec::prefix(&root));
                match tables.push.useridroomidthreadpos_notifytotal.scan_from(thread_prefix, start, false).next() {
                    Some(entry) => entry?.1 .0,
                    None => (0, 0),
                }
            }
        };
        out.threads.push((root, (total.notify.saturating_sub(then.0), total.highlight.saturating_sub(then.1))));
    }
    Ok(out)
}

/// The fold of a user's main timeline in a room (`NotifyFold`), under the thread key `""`.
pub(crate) const MAIN_TIMELINE: &str = "";

/// Where the main timeline's totals at receipt `read` are found.
pub(crate) fn main_totals_at(services: &Services, user: &UserId, room: &RoomId, read: u64) -> Result<TotalsAt> {
    thread_totals_at(services, user, room, MAIN_TIMELINE, read)
}

/// Where a timeline's totals at receipt `read` are found (`MAIN_TIMELINE` or a thread root).
pub(crate) fn thread_totals_at(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    timeline: &str,
    read: u64,
) -> Result<TotalsAt> {
    let key = (user.to_owned(), room.to_owned(), timeline.to_owned());
    let fold = services.db.tables.push.useridroomidthread_notifyfold.get(&key)?.map(|Json(f)| f);
    Ok(NotifyFold::totals_at(fold.as_ref(), read))
}

/// Starts the evaluator: it tails the event stream from where it stopped.
pub fn start(services: Arc<Services>) {
    tokio::spawn(run(services));
}

async fn run(services: Arc<Services>) {
    let mut stream = services.rooms.subscribe();
    let mut done = *services.push.evaluated.borrow();
    let mut rooms = RoomCache::default();
    loop {
        let head = *stream.borrow_and_update();
        while head > done {
            match evaluate_range(&services, &mut rooms, done, head, RECORDS_PER_BATCH).await {
                Ok(reached) => done = reached,
                Err(error) => {
                    tracing::error!(%error, "evaluating push rules failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            services.push.evaluated.send_replace(done);
        }
        if stream.changed().await.is_err() {
            return;
        }
    }
}

/// Evaluates the events after `done` up to `head` (at most [`CHUNK`] of them, and stopping
/// after the event that brings the batch to `max_records` notifications) in one batch; returns
/// the position reached.
async fn evaluate_range(
    services: &Services,
    rooms: &mut RoomCache,
    done: u64,
    head: u64,
    max_records: usize,
) -> Result<u64> {
    let tables = &services.db.tables;
    let mut events = Vec::new();
    let mut reached = head;
    for entry in tables.rooms.pos_eventid.scan_from(Vec::new(), Be64(done + 1).encode(), true) {
        let (Be64(pos), event_id) = entry?;
        if pos > head {
            break;
        }
        if events.len() == CHUNK {
            reached = pos - 1;
            break;
        }
        events.push((pos, event_id));
    }
    // The totals of this batch: from the evaluator's memory when it has them (it writes them
    // and is the only one to), else read once per user and room; remembered once written.
    let mut totals: HashMap<(OwnedUserId, OwnedRoomId), Totals> = HashMap::new();
    let mut threads: HashMap<(OwnedUserId, OwnedRoomId, String), ThreadTotal> = HashMap::new();
    let mut batch = Batch::new();
    let mut pushes = false;
    let mut records = 0;
    for (pos, event_id) in events {
        if records >= max_records {
            reached = pos - 1;
            break;
        }
        let Some(json) = services.rooms.pdu_json(&event_id)? else { continue };
        let Some(meta) = services.rooms.meta(&event_id)? else { continue };
        // The discovery room's joins and leaves are the directory's business: nobody is notified.
        if services.discovery.is_room(&meta.room_id) {
            continue;
        }
        let (thread, notified) = evaluate(services, rooms, &meta.room_id, meta.snapshot, pos, &json).await?;
        records += notified.len();
        for (user, actions) in notified {
            let key = (user.clone(), meta.room_id.clone());
            let mut total = match totals.get(&key).or_else(|| rooms.totals(&key.1, &key.0)) {
                Some(t) => *t,
                None => {
                    let all = tables.push.useridroomid_notifytotal.get(&key)?.map_or((0, 0), |Json(t)| t);
                    // No main total but notifications counted: all were counted as main.
                    let main = tables.push.useridroomid_mainnotifytotal.get(&key)?.map(|Json(t)| t);
                    Totals { all, main: main.unwrap_or(all), main_stored: main.is_some() }
                }
            };
            let highlight = u64::from(actions.iter().any(Action::is_highlight));
            total.all = (total.all.0 + 1, total.all.1 + highlight);
            match &thread {
                Some(root) => {
                    let thread_key = (user.clone(), meta.room_id.clone(), root.clone());
                    let mut t = match threads.get(&thread_key) {
                        Some(t) => *t,
                        None => tables
                            .push
                            .useridroomidthread_notifytotal
                            .get(&thread_key)?
                            .map_or_else(Default::default, |Json(t)| t),
                    };
                    t = ThreadTotal { notify: t.notify + 1, highlight: t.highlight + highlight, last_pos: pos };
                    tables.push.useridroomidthreadpos_notifytotal.insert(
                        &mut batch,
                        &(user.clone(), meta.room_id.clone(), root.clone(), Be64(pos)),
                        &Json((t.notify, t.highlight)),
                    );
                    threads.insert(thread_key, t);
                }
                None => total.main = (total.main.0 + 1, total.main.1 + highlight),
            }
            totals.insert(key, total);
            let record = NotificationRecord {
                actions,
                notify: total.all.0,
                highlight: total.all.1,
                thread: thread.clone(),
                main: (total.main != total.all).then_some(total.main),
            };
            tables.push.useridroomidpos_notification.insert(
                &mut batch,
                &(user.clone(), meta.room_id.clone(), Be64(pos)),
                &record,
            );
            pushes |= super::sender::enqueue(services, &mut batch, &user, &meta.room_id, pos)?;
        }
    }
    for (key, total) in &mut totals {
        tables.push.useridroomid_notifytotal.insert(&mut batch, key, &Json(total.all));
        if total.main != total.all {
            tables.push.useridroomid_mainnotifytotal.insert(&mut batch, key, &Json(total.main));
        } else if total.main_stored {
            // Written by an earlier release, which stored it even when equal to the room's.
            tables.push.useridroomid_mainnotifytotal.remove(&mut batch, key);
        }
        total.main_stored = total.main != total.all;
    }
    for (key, total) in threads {
        tables.push.useridroomidthread_notifytotal.insert(&mut batch, &key, &Json(total));
    }
    tables.meta.insert(&mut batch, &EVALUATED.to_owned(), &Be64(reached));
    services.db.write_unsynced(batch)?;
    // Only once written: a batch that failed is evaluated again from the totals before it.
    rooms.remember_totals(totals);
    if pushes {
        services.push_sender.wake.notify_one();
    }
    Ok(reached)
}

/// What the rules of a room's local members need to know of the room, built once per state.
struct RoomContext {
    snapshot: u64,
    /// Local joined members: (user, display name, start of their joined period).
    members: Vec<(OwnedUserId, String, u64)>,
    member_count: UInt,
    power_levels: Option<PushConditionPowerLevelsCtx>,
}

/// What the evaluator keeps of recently active rooms: their contexts, rebuilt when a room's
/// state changes, and the running totals of their members as last written (the evaluator is
/// their only writer), which spares two reads per member and room in every batch. A room's
/// totals are forgotten with its context: a purged room, the only other place that changes
/// them, comes back (if ever) through a join, which changes its state.
#[derive(Default)]
struct RoomCache {
    contexts: HashMap<OwnedRoomId, Arc<RoomContext>>,
    totals: HashMap<OwnedRoomId, HashMap<OwnedUserId, Totals>>,
    remembered: usize,
}

/// Users' totals remembered before the cache starts over.
const TOTALS_CACHED: usize = 100_000;

impl RoomCache {
    fn totals(&self, room: &RoomId, user: &UserId) -> Option<&Totals> {
        self.totals.get(room).and_then(|users| users.get(user))
    }

    /// The totals a batch wrote.
    fn remember_totals(&mut self, written: HashMap<(OwnedUserId, OwnedRoomId), Totals>) {
        if self.remembered + written.len() > TOTALS_CACHED {
            self.totals.clear();
            self.remembered = 0;
        }
        for ((user, room), total) in written {
            if self.totals.entry(room).or_default().insert(user, total).is_none() {
                self.remembered += 1;
            }
        }
    }

    /// The context of `room` for an event whose room state is `snapshot` (from the event's own
    /// record, already read): kept while the events that follow share that state, rebuilt from
    /// the durable record once a state change (a membership, the power levels) moves it.
    fn get(&mut self, services: &Services, room: &RoomId, snapshot: u64) -> Result<Option<Arc<RoomContext>>> {
        if let Some(cached) = self.contexts.get(room) {
            if cached.snapshot == snapshot {
                return Ok(Some(cached.clone()));
            }
        }
        if let Some(users) = self.totals.remove(room) {
            self.remembered -= users.len();
        }
        // The durable record: its snapshot is written in the batch that changes the memberships.
        let Some(Json(record)) = services.db.tables.rooms.roomid_room.get(&room.to_owned())? else { return Ok(None) };
        let context = Arc::new(build_context(services, room, snapshot, &record.version)?);
        if self.contexts.len() > 10_000 {
            self.contexts.clear();
        }
        self.contexts.insert(room.to_owned(), context.clone());
        Ok(Some(context))
    }
}

fn build_context(
    services: &Services,
    room: &RoomId,
    snapshot: u64,
    version: &ruma::RoomVersionId,
) -> Result<RoomContext> {
    let rooms = &services.rooms;
    let mut members = Vec::new();
    let mut joined = 0u64;
    for (user, record) in rooms.members(room)? {
        if record.membership != "join" {
            continue;
        }
        joined += 1;
        if user.server_name() != services.config.server_name {
            continue;
        }
        let name = rooms
            .pdu(&record.event_id)?
            .and_then(|p| serde_json::from_str::<Value>(p.content.get()).ok())
            .and_then(|c| c["displayname"].as_str().map(str::to_owned))
            .unwrap_or_else(|| user.localpart().to_owned());
        members.push((user, name, record.joined_since.unwrap_or(record.pos)));
    }
    let mut power_levels = None;
    if let (Some(levels), Some(rules)) =
        (rooms.state_event(room, &StateEventType::RoomPowerLevels, "")?, version.rules())
    {
        let content: Value = serde_json::from_str(levels.content.get()).unwrap_or_default();
        let users = content["users"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.parse().ok()?, Int::new(v.as_i64()?)?))).collect())
            .unwrap_or_default();
        let users_default = Int::new(content["users_default"].as_i64().unwrap_or(0)).unwrap_or_default();
        let notifications = serde_json::from_value(content["notifications"].clone()).unwrap_or_default();
        let mut creators = Vec::new();
        if let Some(create) = rooms.state_event(room, &StateEventType::RoomCreate, "")? {
            creators.push(create.sender.clone());
            let content: Value = serde_json::from_str(create.content.get()).unwrap_or_default();
            let extra = content["additional_creators"].as_array().cloned().unwrap_or_default();
            creators.extend(extra.iter().filter_map(|u| u.as_str().and_then(|u| u.parse().ok())));
        }
        let level_rules = ruma::room_version_rules::RoomPowerLevelsRules::new(&rules.authorization, creators);
        power_levels = Some(PushConditionPowerLevelsCtx::new(users, users_default, notifications, level_rules));
    }
    Ok(RoomContext { snapshot, members, member_count: UInt::new(joined).unwrap_or_default(), power_levels })
}

/// The local users an event notifies, with the actions their rules give: members joined before
/// the event (not its sender), and the target of an invite. With them, the thread root when
/// the event is a thread reply.
async fn evaluate(
    services: &Services,
    rooms: &mut RoomCache,
    room: &RoomId,
    snapshot: u64,
    pos: u64,
    json: &[u8],
) -> Result<(Option<String>, Vec<(OwnedUserId, Vec<Action>)>)> {
    let Some(context) = rooms.get(services, room, snapshot)? else { return Ok((None, Vec::new())) };
    // One read of the event: what decides who is a candidate is taken from the parts the rules
    // read anyway.
    let Ok(input) = serde_json::from_slice::<RuleInput<'_>>(json) else { return Ok((None, Vec::new())) };
    let text =
        |part: Option<&RawValue>| part.and_then(|p| serde_json::from_str::<std::borrow::Cow<'_, str>>(p.get()).ok());
    let (sender, kind, event_state_key) = (text(input.sender), text(input.kind), text(input.state_key));
    let sender = sender.as_deref().unwrap_or_default();
    let mut candidates: Vec<(&UserId, &str)> = context
        .members
        .iter()
        .filter(|(user, _, since)| user.as_str() != sender && *since < pos)
        .map(|(user, name, _)| (user.as_ref(), name.as_str()))
        .collect();
    let mut invited = None;
    let membership = || {
        let content = input.content.map_or("{}", RawValue::get);
        serde_json::from_str::<crate::rooms::pdu::MembershipOnly>(content).ok().and_then(|c| c.membership)
    };
    if kind.as_deref() == Some("m.room.member") && membership().as_deref() == Some("invite") {
        if let Some(target) = event_state_key.as_deref().and_then(|s| UserId::parse(s).ok()) {
            if target.server_name() == services.config.server_name && !candidates.iter().any(|(u, _)| *u == target) {
                invited = Some(target);
            }
        }
    }
    if let Some(target) = &invited {
        candidates.push((target, target.localpart()));
    }
    if candidates.is_empty() {
        return Ok((None, Vec::new()));
    }
    let flat = flattened(input.client_parts())?;
    // The whole event, for members whose own rules may name any of its keys: built once, if any.
    let mut whole: Option<FlattenedJson> = None;
    let thread = (flat.get_str(r"content.m\.relates_to.rel_type") == Some("m.thread"))
        .then(|| flat.get_str(r"content.m\.relates_to.event_id").map(str::to_owned))
        .flatten();
    let state_key = flat.get_str("state_key");
    let mentioned = flat.get(r"content.m\.mentions.user_ids").and_then(|v| v.as_array()).unwrap_or_default();
    let names = |user: &UserId| {
        state_key == Some(user.as_str()) || mentioned.iter().any(|id| id.as_str() == Some(user.as_str()))
    };
    // The outcome for members with default rules whom the event does not name (see `CachedRules`).
    let mut shared: Option<Option<Vec<Action>>> = None;
    // Whether each default rule the same for every member applies, by slot (`CachedRules::shared`).
    let mut applies = [None::<bool>; SHARED_SLOTS];
    let mut out = Vec::new();
    for (user, name) in candidates {
        let cached = services.push.cached(services, user)?;
        let reusable = cached.default && !names(user);
        let outcome = match (&shared, reusable) {
            (Some(outcome), true) => outcome.clone(),
            _ => {
                let mut room_ctx =
                    PushConditionRoomCtx::new(room.to_owned(), context.member_count, user.to_owned(), name.to_owned());
                room_ctx.power_levels = context.power_levels.clone();
                let mut outcome = None;
                for (i, rule) in cached.rules.iter().enumerate() {
                    let slot = cached.shared.get(i).copied().flatten().map(usize::from);
                    let applied = match slot.and_then(|slot| applies[slot]) {
                        Some(applied) => applied,
                        None => {
                            let event = match (slot, cached.reads_whole_event) {
                                // The server-default rules read only what `RuleInput` keeps.
                                (Some(_), _) | (None, false) => &flat,
                                (None, true) => match &mut whole {
                                    Some(whole) => &*whole,
                                    None => whole.insert(flattened(String::from_utf8_lossy(json).into_owned())?),
                                },
                            };
                            let applied = rule.applies(event, &room_ctx).await;
                            if let Some(slot) = slot {
                                applies[slot] = Some(applied);
                            }
                            applied
                        }
                    };
                    if applied {
                        let actions = rule.actions();
                        if actions.iter().any(Action::should_notify) {
                            outcome = Some(actions.to_vec());
                        }
                        break;
                    }
                }
                if reusable {
                    shared = Some(outcome.clone());
                }
                outcome
            }
        };
        if let Some(actions) = outcome {
            out.push((user.to_owned(), actions));
        }
    }
    Ok((thread, out))
}

/// What the server-default push rules read of an event — its type, content, sender and state
/// key — with its room id and timestamp: the flattened form of only these costs a fraction of
/// the whole PDU's (its hashes, signatures, auth and prev events are most of its keys).
#[derive(serde::Deserialize)]
struct RuleInput<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sender: Option<&'a RawValue>,
    #[serde(borrow, default)]
    state_key: Option<&'a RawValue>,
    #[serde(borrow, default)]
    room_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    origin_server_ts: Option<&'a RawValue>,
}

impl RuleInput<'_> {
    /// These members as one JSON object (each value is JSON as the event holds it).
    fn client_parts(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push('{');
        let parts = [
            ("type", self.kind),
            ("content", self.content),
            ("sender", self.sender),
            ("state_key", self.state_key),
            ("room_id", self.room_id),
            ("origin_server_ts", self.origin_server_ts),
        ];
        for (name, value) in parts {
            let Some(value) = value else { continue };
            if out.len() > 1 {
                out.push(',');
            }
            out.push('"');
            out.push_str(name);
            out.push_str("\":");
            out.push_str(value.get());
        }
        out.push('}');
        out
    }
}

/// Whether a rule of `rules` may read a key of the event that [`RuleInput`] leaves out: a
/// condition on a key outside its members, or a condition this server does not know.
fn reads_whole_event(rules: &Ruleset) -> bool {
    use ruma::push::PushCondition;
    const KEPT: [&str; 6] = ["type", "content", "sender", "state_key", "room_id", "origin_server_ts"];
    let kept = |key: &str| {
        KEPT.iter().any(|name| key.strip_prefix(name).is_some_and(|rest| rest.is_empty() || rest.starts_with('.')))
    };
    rules.override_.iter().chain(rules.underride.iter()).flat_map(|rule| rule.conditions.iter()).any(|condition| {
        match condition {
            PushCondition::EventMatch(c) => !kept(&c.key),
            PushCondition::EventPropertyIs(c) => !kept(&c.key),
            PushCondition::EventPropertyContains(c) => !kept(&c.key),
            PushCondition::RoomMemberCount(_) | PushCondition::SenderNotificationPermission(_) => false,
            #[allow(deprecated)]
            PushCondition::ContainsDisplayName => false,
            _ => true,
        }
    })
}

/// The flattened form ruma matches rules against, of a JSON object.
fn flattened(json: String) -> Result<FlattenedJson> {
    let raw = RawValue::from_string(json).map_err(|e| crate::error::Error::Internal(e.to_string()))?;
    Ok(FlattenedJson::from_raw(&Raw::<Value>::from_json(raw)))
}

/// Evaluates every event the stream has published, as the evaluator's task would (tests of
/// other domains, which run without the background tasks).
#[cfg(test)]
pub(crate) async fn evaluate_all(services: &Services) {
    let head = *services.rooms.subscribe().borrow();
    let mut done = *services.push.evaluated.borrow();
    let mut rooms = RoomCache::default();
    while done < head {
        done = evaluate_range(services, &mut rooms, done, head, RECORDS_PER_BATCH).await.expect("evaluate");
    }
    services.push.evaluated.send_replace(done);
}

#[cfg(test)]
mod tests {
    use ruma::events::TimelineEventType;
    use serde_json::json;

    use crate::rooms::NewEvent;

    /// A rule's result is shared between members only while it is the default rule as it
    /// stands for everyone: a member who added a keyword still gets the defaults' outcome for
    /// other messages (from the results computed for another member), and a member who turned
    /// a default rule off is not given the result of the rule others have on.
    #[tokio::test]
    async fn default_rules_are_shared_only_while_unchanged() {
        use ruma::push::{Action, HighlightTweakValue, NewPatternedPushRule, NewPushRule, RuleKind, Tweak};

        let (_dir, services, [alice, bob, carol], room) = crate::services::testing::three_users_and_a_room().await;
        let dave = services.users.create("dave", None, false).await.expect("dave");
        for member in [&carol, &dave] {
            services.rooms.join(&room, member, None).await.expect("join");
        }
        let keyword = NewPatternedPushRule::new(
            "pineapple".into(),
            "pineapple".into(),
            vec![Action::Notify, Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes))],
        );
        crate::push::insert(&services, &carol, NewPushRule::Content(keyword), None, None).await.expect("keyword");
        crate::push::set_enabled(&services, &dave, RuleKind::Underride, ".m.rule.message", false).await.expect("off");
        for body in ["hello", "pineapple pie"] {
            let event = NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": body }));
            services.rooms.append(&room, &alice, event, None).await.expect("message");
        }
        super::evaluate_all(&services).await;
        let counts = |user| super::unread_counts(&services, &room, user).expect("counts");
        assert_eq!(counts(&bob), (2, 0), "the defaults");
        assert_eq!(counts(&carol), (2, 1), "the defaults, and the keyword");
        assert_eq!(counts(&dave), (0, 0), "messages turned off");
    }

    /// The server-default rules are matched against the event's client-visible members only; a
    /// member's own rule may name any key of the event (as Synapse matches rules against the
    /// whole event), here one only the stored PDU carries.
    #[tokio::test]
    async fn a_members_own_rule_is_matched_against_the_whole_event() {
        use ruma::push::{Action, HighlightTweakValue, NewConditionalPushRule, NewPushRule, PushCondition, Tweak};

        let (_dir, services, [alice, bob, carol], room) = crate::services::testing::three_users_and_a_room().await;
        services.rooms.join(&room, &carol, None).await.expect("carol joins");
        let condition =
            PushCondition::EventMatch(ruma::push::EventMatchConditionData::new("hashes.sha256".into(), "*".into()));
        let rule = NewConditionalPushRule::new(
            "hashed".into(),
            vec![condition],
            vec![Action::Notify, Action::SetTweak(Tweak::Highlight(HighlightTweakValue::Yes))],
        );
        crate::push::insert(&services, &carol, NewPushRule::Override(rule), None, None).await.expect("rule");
        let event =
            NewEvent::message(TimelineEventType::RoomMessage, json!({ "msgtype": "m.text", "body": "bonjour" }));
        services.rooms.append(&room, &alice, event, None).await.expect("message");
        super::evaluate_all(&services).await;
        let counts = |user| super::unread_counts(&services, &room, user).expect("counts");
        assert_eq!(counts(&bob), (1, 0), "the defaults");
        assert_eq!(counts(&carol), (1, 1), "her rule matched a key of the stored event");
    }

    /// An invite notifies its local target, who is no member yet (`.m.rule.invite_for_me`), and
    /// not the members, for whom it is someone else's membership.
    #[tokio::test]
    async fn an_invite_notifies_its_target() {
        let (_dir, services, [alice, bob, carol], room) = crate::services::testing::three_users_and_a_room().await;
        services.rooms.set_membership(&room, &alice, &carol, "invite", None, Default::default()).await.expect("invite");
        super::evaluate_all(&services).await;
        assert_eq!(super::unread_counts(&services, &room, &carol).expect("counts"), (1, 0), "the invitee");
        assert_eq!(super::unread_counts(&services, &room, &bob).expect("counts"), (0, 0), "a member");
    }

    /// A batch stops once it holds its bound of notifications, the next goes on from the event
    /// after, and the counts come out as if evaluated at once: ten messages notifying two
    /// members each (20 records) with a bound of 5 take four batches of three events or fewer.
    #[tokio::test]
    async fn a_batch_stops_at_its_bound_of_records_and_the_next_goes_on() {
        let (_dir, services, [alice, bob, carol], room) = crate::services::testing::three_users_and_a_room().await;
        services.rooms.join(&room, &carol, None).await.expect("carol joins");
        let mut rooms = super::RoomCache::default();
        let joined = *services.rooms.subscribe().borrow();
        let done = super::evaluate_range(&services, &mut rooms, 0, joined, usize::MAX).await.expect("set-up");
        assert_eq!(done, joined);
        for n in 0..10 {
            let content = json!({ "msgtype": "m.text", "body": format!("message {n}") });
            let event = NewEvent::message(TimelineEventType::RoomMessage, content);
            services.rooms.append(&room, &alice, event, None).await.expect("message");
        }
        let head = *services.rooms.subscribe().borrow();
        let (mut done, mut batches) = (joined, 0);
        while done < head {
            done = super::evaluate_range(&services, &mut rooms, done, head, 5).await.expect("batch");
            batches += 1;
        }
        assert_eq!(done, head);
        assert_eq!(batches, 4, "at most three events (six records) a batch");
        for member in [&bob, &carol] {
            assert_eq!(super::unread_counts(&services, &room, member).expect("counts"), (10, 0), "{member}");
        }
    }
}
