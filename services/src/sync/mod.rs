//! `/sync`: a consumer of the stream. A sync token is the stream position the client has seen;
//! the answer is everything for the user between that position and the current durable one.
//! With a timeout, the request sleeps on the stream's notification until something arrives.

pub mod sliding;

pub mod token;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use ruma::{events::StateEventType, OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{json, Value};

pub use self::token::SyncToken;
use crate::{
    error::{Error, Result},
    rooms::read::{token, EventFilter},
    services::Services,
};

/// What the client's filter asks of a sync.
#[derive(Debug, Clone)]
pub struct SyncFilter {
    pub timeline_limit: usize,
    pub timeline: EventFilter,
    pub state: EventFilter,
    pub ephemeral: EventFilter,
    pub room_account_data: EventFilter,
    pub account_data: EventFilter,
    pub presence: EventFilter,
    /// Only these rooms (all when `None`), never those in `not_rooms`.
    pub rooms: Option<Vec<OwnedRoomId>>,
    pub not_rooms: Vec<OwnedRoomId>,
    /// Member events in `state` only for the timeline's senders (and the user). Redundant member
    /// events are always included, as the spec allows.
    pub lazy_load_members: bool,
    pub include_leave: bool,
    /// The request's `use_state_after`: `state` carries the changes up to the timeline's end
    /// (served as `state_after`) rather than up to its start.
    pub state_after: bool,
    /// The timeline filter's `unread_thread_notifications`: counts per thread, and the room's
    /// own counts for the main timeline only.
    pub unread_thread_notifications: bool,
}

impl Default for SyncFilter {
    fn default() -> Self {
        Self {
            timeline_limit: 10,
            timeline: EventFilter::default(),
            state: EventFilter::default(),
            ephemeral: EventFilter::default(),
            room_account_data: EventFilter::default(),
            account_data: EventFilter::default(),
            presence: EventFilter::default(),
            rooms: None,
            not_rooms: Vec::new(),
            lazy_load_members: false,
            include_leave: false,
            state_after: false,
            unread_thread_notifications: false,
        }
    }
}

impl SyncFilter {
    fn wants_room(&self, room: &RoomId) -> bool {
        !self.not_rooms.iter().any(|r| r == room)
            && self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room))
    }
}

pub struct SyncParams {
    pub user: OwnedUserId,
    pub device: OwnedDeviceId,
    /// `set_presence`: the presence this sync reports for the user (`None`: leave it alone).
    pub set_presence: Option<String>,
    pub since: Option<SyncToken>,
    pub timeout: Duration,
    pub full_state: bool,
    pub filter: SyncFilter,
}

#[derive(Debug, Default)]
pub struct RoomSync {
    pub timeline: Vec<Value>,
    pub limited: bool,
    pub prev_batch: Option<String>,
    pub state: Vec<Value>,
    pub account_data: Vec<Value>,
    pub ephemeral: Vec<Value>,
    pub notification_count: u64,
    pub highlight_count: u64,
    /// (thread root, notification count, highlight count) of threads with something unread,
    /// when the filter asks for them apart.
    pub thread_counts: Vec<(String, u64, u64)>,
    /// Member counts and heroes: on an initial (or full) sync and when membership changed, as
    /// the spec allows (it may be omitted otherwise), so a message in a big room costs no scan
    /// of its members.
    pub summary: Option<RoomSummary>,
}

#[derive(Debug, Default, Clone)]
pub struct RoomSummary {
    pub heroes: Vec<OwnedUserId>,
    pub joined_count: u64,
    pub invited_count: u64,
}

#[derive(Debug, Default)]
pub struct SyncResult {
    pub next_batch: String,
    pub join: BTreeMap<OwnedRoomId, RoomSync>,
    pub invite: BTreeMap<OwnedRoomId, Vec<Value>>,
    pub knock: BTreeMap<OwnedRoomId, Vec<Value>>,
    pub leave: BTreeMap<OwnedRoomId, RoomSync>,
    pub account_data: Vec<Value>,
    pub to_device: Vec<Value>,
    pub presence: Vec<Value>,
    pub device_lists: crate::keys::DeviceLists,
    pub one_time_key_counts: BTreeMap<String, u64>,
    pub unused_fallback_key_types: Vec<String>,
}

impl SyncResult {
    fn is_empty(&self) -> bool {
        self.to_device.is_empty()
            && self.device_lists.is_empty()
            && self.presence.is_empty()
            && self.join.is_empty()
            && self.invite.is_empty()
            && self.knock.is_empty()
            && self.leave.is_empty()
            && self.account_data.is_empty()
    }
}

/// A stream position a client sent, checked against the current one: a token from the future
/// (forged, or from another server's database) is refused rather than trusted, since sync deletes
/// the to-device messages up to it.
pub fn checked_position(services: &Services, pos: u64) -> Result<u64> {
    let current = *services.rooms.subscribe().borrow();
    if pos > current {
        return Err(Error::invalid_param(format!("token position {pos} is beyond the server's current {current}")));
    }
    Ok(pos)
}

/// Answers a sync, waiting up to `timeout` for something new when there is nothing yet.
pub async fn sync(services: &Services, params: SyncParams) -> Result<SyncResult> {
    // Syncing with a token acknowledges the to-device messages up to it.
    if let Some(since) = params.since {
        let since = checked_position(services, since.pos)?;
        services.to_device.acknowledge(&params.user, &params.device, since)?;
    }
    if let Some(presence) = &params.set_presence {
        if services.presence.set(&params.user, presence, None).await? {
            crate::appservice::sender::queue_presence(services, &params.user);
        }
    }
    let always_answer = params.since.is_none() || params.full_state;
    let mut result = long_poll(
        services,
        &params.user,
        params.timeout,
        always_answer,
        |now| compute(services, &params, now),
        SyncResult::is_empty,
    )
    .await?;
    if !result.join.is_empty() {
        if let Ok(token) = SyncToken::parse(&result.next_batch) {
            services.push.caught_up(token.pos).await;
        }
    }
    // A few reads per room: side by side, as the rooms themselves were, when there are many.
    let rooms: Vec<(&OwnedRoomId, &mut RoomSync)> = result.join.iter_mut().collect();
    side_by_side(rooms, |(room, data)| -> Result<()> {
        let unread = crate::push::evaluate::unread(services, room, &params.user)?;
        if params.filter.unread_thread_notifications {
            (data.notification_count, data.highlight_count) = unread.main;
            data.thread_counts = unread.threads.into_iter().map(|(root, (n, h))| (root, n, h)).collect();
        } else {
            (data.notification_count, data.highlight_count) = unread.total();
        }
        Ok(())
    })?;
    Ok(result)
}

/// Computes an answer from the current position, and while it is empty (and `always_answer` is
/// false) sleeps until a write concerning `user`, a typing change in one of their rooms (both
/// through the user's notifier), a typing notice in one of their rooms expiring, or the timeout —
/// then computes again. No polling: every wake-up is a notification.
pub(crate) async fn long_poll<R>(
    services: &Services,
    user: &UserId,
    timeout: Duration,
    always_answer: bool,
    mut compute: impl FnMut(SyncToken) -> Result<R>,
    is_empty: impl Fn(&R) -> bool,
) -> Result<R> {
    let position = services.rooms.subscribe();
    let notify = services.rooms.notifier().subscribe(user);
    let typing = services.typing.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Register for a wake-up before looking, so nothing durable in between is missed.
        let woken = notify.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let current = SyncToken { pos: *position.borrow(), typing: *typing.borrow() };
        let result = compute(current)?;
        if always_answer || !is_empty(&result) {
            return Ok(result);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(result);
        }
        // The user's rooms are read only when someone somewhere is typing: an expiry is the one
        // wake-up no notifier sends.
        let expiry = if services.typing.anyone_typing() {
            let joined: Vec<OwnedRoomId> = services
                .rooms
                .memberships_of(user)?
                .into_iter()
                .filter(|(_, m)| m.membership == "join")
                .map(|(room, _)| room)
                .collect();
            services.typing.next_expiry_in(&joined)
        } else {
            None
        };
        let wake = expiry.map(tokio::time::Instant::from_std).map_or(deadline, |e| e.min(deadline));
        match tokio::time::timeout_at(wake, woken).await {
            Ok(()) => continue,
            Err(_) if tokio::time::Instant::now() >= deadline => return Ok(result),
            Err(_) => continue,
        }
    }
}

fn compute(services: &Services, params: &SyncParams, now: SyncToken) -> Result<SyncResult> {
    let rooms = &services.rooms;
    let user = &params.user;
    let current = now.pos;
    let since = params.since.map(|s| s.pos.min(current));
    let typing_since = params.since.map(|s| s.typing);
    let mut result = SyncResult { next_batch: now.encode(), ..Default::default() };
    let changed_after = |pos: u64| since.is_none_or(|s| pos > s);

    // The discovery room is the directory's, never the user's: no timeline, state, presence or
    // device list changes come from it.
    let memberships: Vec<_> =
        rooms.memberships_of(user)?.into_iter().filter(|(room, _)| !services.discovery.is_room(room)).collect();
    // Joined rooms with something to say, computed after the loop (side by side when many).
    let mut joined_work: Vec<(OwnedRoomId, Option<u64>, bool)> = Vec::new();
    for (room, membership) in memberships.iter().cloned() {
        if !params.filter.wants_room(&room) {
            continue;
        }
        match membership.membership.as_str() {
            "join" => {
                // Newly joined (not a profile change within the same joined period): sent whole.
                let fresh = changed_after(membership.period_start()) || params.full_state;
                let from = if fresh { None } else { since };
                // Nothing written to the room since the token and no typing change: nothing to
                // read (room account data is added below on its own).
                if let Some(since) = from {
                    if rooms.last_activity(&room)? <= since && services.typing.typing_in(&room, typing_since).is_none()
                    {
                        continue;
                    }
                }
                joined_work.push((room, from, fresh));
            }
            "invite" if changed_after(membership.pos) => {
                result.invite.insert(room.clone(), stripped_state(services, &room, &membership.event_id)?);
            }
            "knock" if changed_after(membership.pos) => {
                result.knock.insert(room.clone(), stripped_state(services, &room, &membership.event_id)?);
            }
            "leave" | "ban"
                if since.is_some_and(|s| membership.pos > s) || (since.is_none() && params.filter.include_leave) =>
            {
                let data = room_sync(
                    services,
                    (user, &params.device),
                    &room,
                    since,
                    membership.pos,
                    since.is_none(),
                    &params.filter,
                )?;
                result.leave.insert(room, data);
            }
            _ => {}
        }
    }

    for (room, data) in joined_rooms(services, params, joined_work, current, typing_since)? {
        result.join.insert(room, data);
    }

    result.to_device = services.to_device.pending(user, &params.device, since.unwrap_or(0), current)?;
    if let Some(since) = since {
        result.device_lists = services.keys.device_list_changes_in(rooms, user, &memberships, since, current)?;
    }
    result.one_time_key_counts = services.keys.one_time_key_counts(user, &params.device)?;
    result.unused_fallback_key_types = services.keys.unused_fallback_key_types(user, &params.device)?;
    let visible: Vec<OwnedUserId> = match since {
        // Incremental: the presence changes since the token (few), kept if they share a room
        // with the user — no walk over every member of every room at each wake-up.
        Some(since) => {
            let joined: BTreeSet<&OwnedRoomId> =
                memberships.iter().filter(|(_, m)| m.membership == "join").map(|(r, _)| r).collect();
            let mut changed = Vec::new();
            for who in services.presence.changed_between(since, current)? {
                if who == *user || rooms.rooms_of(&who, "join")?.iter().any(|r| joined.contains(r)) {
                    changed.push(who);
                }
            }
            changed
        }
        None => {
            let mut everyone: BTreeSet<OwnedUserId> = BTreeSet::from([user.to_owned()]);
            for room in rooms.rooms_of(user, "join")?.into_iter().filter(|r| !services.discovery.is_room(r)) {
                everyone
                    .extend(rooms.members(&room)?.into_iter().filter(|(_, m)| m.membership == "join").map(|(u, _)| u));
            }
            everyone.into_iter().collect()
        }
    };
    let now_ms = crate::time::now_ms();
    // Only the people the user shares a room with: cost follows the user's rooms, not the server.
    for who in visible {
        let Some(record) = services.presence.get(&who)? else { continue };
        if record.pos > current || since.is_some_and(|s| record.pos <= s) {
            continue;
        }
        let mut content = json!({
            "presence": record.presence,
            "last_active_ago": now_ms.saturating_sub(record.last_active_ts),
            "currently_active": record.presence == "online",
        });
        if let Some(msg) = record.status_msg {
            content["status_msg"] = json!(msg);
        }
        let event = json!({ "type": "m.presence", "sender": who, "content": content });
        if params.filter.presence.accepts(&event) {
            result.presence.push(event);
        }
    }
    for (room, kind, content) in services.account_data.changes(user, since)? {
        let event = json!({ "type": kind, "content": content });
        if room.is_empty() {
            if params.filter.account_data.accepts(&event) {
                result.account_data.push(event);
            }
        } else if let Ok(room) = OwnedRoomId::try_from(room) {
            if rooms.is_joined(user, &room)?
                && !services.discovery.is_room(&room)
                && params.filter.wants_room(&room)
                && params.filter.room_account_data.accepts(&event)
            {
                result.join.entry(room).or_default().account_data.push(event);
            }
        }
    }
    Ok(result)
}

/// Joined rooms above this many are computed on several threads: an initial sync of a user in
/// hundreds of rooms is independent work per room, and one thread would leave the other cores
/// idle while the client waits.
const PARALLEL_ROOMS: usize = 32;

/// The joined rooms' sections (timeline, state, ephemeral) for `work` — (room, from, fresh) —
/// leaving out rooms with nothing to say.
fn joined_rooms(
    services: &Services,
    params: &SyncParams,
    work: Vec<(OwnedRoomId, Option<u64>, bool)>,
    current: u64,
    typing_since: Option<u64>,
) -> Result<Vec<(OwnedRoomId, RoomSync)>> {
    let one = |(room, from, fresh): (OwnedRoomId, Option<u64>, bool)| -> Result<Option<(OwnedRoomId, RoomSync)>> {
        let mut data =
            room_sync(services, (&params.user, &params.device), &room, from, current, fresh, &params.filter)?;
        if let Some(users) = services.typing.typing_in(&room, if fresh { None } else { typing_since }) {
            data.ephemeral.push(json!({ "type": "m.typing", "content": { "user_ids": users } }));
        }
        if let Some(content) = services.receipts.receipt_content(&room, from, current, &params.user)? {
            data.ephemeral.push(json!({ "type": "m.receipt", "content": content }));
        }
        data.ephemeral.retain(|e| params.filter.ephemeral.accepts(e));
        let keep = fresh || !data.timeline.is_empty() || !data.state.is_empty() || !data.ephemeral.is_empty();
        Ok(keep.then_some((room, data)))
    };
    Ok(side_by_side(work, one)?.into_iter().flatten().collect())
}

/// `f` over every item, in order: on the calling thread for up to [`PARALLEL_ROOMS`] items,
/// else in one chunk per core on scoped threads. The first error wins.
pub fn side_by_side<T: Send, R: Send>(items: Vec<T>, f: impl Fn(T) -> Result<R> + Sync) -> Result<Vec<R>> {
    if items.len() <= PARALLEL_ROOMS {
        return items.into_iter().map(f).collect();
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let chunk = items.len().div_ceil(threads);
    let mut chunks: Vec<Vec<T>> = Vec::with_capacity(threads);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(chunk).collect());
    }
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| scope.spawn(move || chunk.into_iter().map(f).collect::<Result<Vec<R>>>()))
            .collect();
        let mut out = Vec::new();
        for handle in handles {
            out.extend(handle.join().map_err(|_| Error::Internal("a sync worker panicked".into()))??);
        }
        Ok(out)
    })
}

/// A room's timeline and state for one sync: events in `(from, until]`, the last `limit` of them.
pub(crate) fn room_sync(
    services: &Services,
    (user, device): (&UserId, &ruma::DeviceId),
    room: &RoomId,
    from: Option<u64>,
    until: u64,
    full_state: bool,
    filter: &SyncFilter,
) -> Result<RoomSync> {
    let rooms = &services.rooms;
    // Only what the user may see of the room's history: a newly joined room's first timeline
    // does not reach back past what the room's history visibility allows.
    let reader = rooms.reader(user, room)?;
    let floor = from.map(|f| f.saturating_add(1)).unwrap_or(0);
    let mut picked = Vec::new();
    for entry in reader.timeline(floor, until, false) {
        picked.push(entry?);
        if picked.len() > filter.timeline_limit {
            break;
        }
    }
    let limited = picked.len() > filter.timeline_limit;
    picked.truncate(filter.timeline_limit);
    picked.reverse();
    let first_pos = picked.first().map(|(pos, _)| *pos);
    let mut data = RoomSync { limited, prev_batch: first_pos.map(token), ..Default::default() };
    for (pos, id) in &picked {
        if let Some(event) = reader.event(*pos, id)? {
            if filter.timeline.accepts(&event) {
                data.timeline.push(event);
            }
        }
    }
    rooms.add_transaction_ids(user, device, &mut data.timeline)?;

    let state_at_start = match first_pos {
        Some(pos) => rooms.snapshot_before(room, pos)?,
        None => rooms.snapshot_before(room, until + 1)?,
    };
    let senders: BTreeSet<&str> = data.timeline.iter().filter_map(|e| e["sender"].as_str()).collect();
    // With lazy-loaded members, the member events of people who sent nothing in the timeline
    // are dropped by their key, before any is read: in a room of hundreds of members the
    // client gets (and the server reads) only the few it needs.
    let wanted = |(kind, key): &(StateEventType, String)| {
        !filter.lazy_load_members
            || *kind != StateEventType::RoomMember
            || key == user.as_str()
            || senders.contains(key.as_str())
    };
    let state_ids: Vec<OwnedEventId> = if filter.state_after {
        // The state at the timeline's end, or what changed in it since the client's position.
        let end: Vec<OwnedEventId> = match rooms.snapshot_before(room, until.saturating_add(1))? {
            Some(s) => rooms.full_state(s)?.into_iter().filter(|(key, _)| wanted(key)).map(|(_, id)| id).collect(),
            None => Vec::new(),
        };
        match from.filter(|_| !full_state).and_then(|f| rooms.snapshot_before(room, f + 1).ok().flatten()) {
            Some(s) => {
                let before: BTreeSet<OwnedEventId> = rooms.full_state(s)?.into_iter().map(|(_, id)| id).collect();
                end.into_iter().filter(|id| !before.contains(id)).collect()
            }
            None => end,
        }
    } else if full_state || limited {
        let mut state: BTreeMap<(StateEventType, String), OwnedEventId> = match state_at_start {
            Some(snapshot) => rooms.full_state(snapshot)?.into_iter().collect(),
            None => BTreeMap::new(),
        };
        // State events the reader may not see are left out of the timeline; where one of them
        // is the state at the timeline's end, the state section carries it, so the client
        // still ends up with the room's state (its name, join rules, members) as it is.
        let gapless = reader.joined_since().is_some_and(|j| first_pos.is_none_or(|p| p > j));
        if !gapless {
            let in_timeline: BTreeSet<&str> = data.timeline.iter().filter_map(|e| e["event_id"].as_str()).collect();
            if let Some(end) = rooms.snapshot_before(room, until.saturating_add(1))? {
                for (key, id) in rooms.full_state(end)? {
                    if !in_timeline.contains(id.as_str()) {
                        state.insert(key, id);
                    }
                }
            }
        }
        state.retain(|key, _| wanted(key));
        if full_state {
            state.into_values().collect()
        } else {
            // Only what changed between the client's last position and the start of the timeline.
            let before: BTreeSet<OwnedEventId> =
                match from.and_then(|f| rooms.snapshot_before(room, f + 1).ok().flatten()) {
                    Some(s) => rooms.full_state(s)?.into_iter().map(|(_, id)| id).collect(),
                    None => BTreeSet::new(),
                };
            state.into_values().filter(|id| !before.contains(id)).collect()
        }
    } else if filter.lazy_load_members {
        // An incremental sync that is not limited still brings the member events of senders
        // the client may not have loaded yet (redundant ones are allowed by the spec).
        let in_timeline: BTreeSet<&str> = data.timeline.iter().filter_map(|e| e["event_id"].as_str()).collect();
        let mut members = Vec::new();
        if let Some(snapshot) = state_at_start {
            for sender in &senders {
                if let Some(id) = rooms.state_event_id_in(snapshot, &StateEventType::RoomMember, sender)? {
                    if !in_timeline.contains(id.as_str()) {
                        members.push(id);
                    }
                }
            }
        }
        members
    } else {
        Vec::new()
    };
    // Someone who was never joined (a withdrawn knock, a rejected invite, a ban before joining)
    // sees their own membership and nothing of the room's state.
    let whole_state = reader.may_read_state()?;
    for id in state_ids {
        let Some(event) = rooms.client_event(&id)? else { continue };
        if !filter.state.accepts(&event) {
            continue;
        }
        let own_membership = event["type"] == "m.room.member" && event["state_key"] == user.as_str();
        if !whole_state && !own_membership {
            continue;
        }
        if filter.lazy_load_members && event["type"] == "m.room.member" {
            let key = event["state_key"].as_str().unwrap_or("");
            if key != user.as_str() && !senders.contains(key) {
                continue;
            }
        }
        data.state.push(event);
    }

    if !whole_state {
        return Ok(data);
    }
    let membership_changed = data.timeline.iter().chain(&data.state).any(|e| e["type"] == "m.room.member");
    if from.is_none() || full_state || membership_changed {
        data.summary = Some(summary(services, user, room)?);
    }
    Ok(data)
}

/// A room's member counts and up to five heroes (members other than the user).
pub(crate) fn summary(services: &Services, user: &UserId, room: &RoomId) -> Result<RoomSummary> {
    let members = services.rooms.members(room)?;
    Ok(RoomSummary {
        joined_count: members.iter().filter(|(_, m)| m.membership == "join").count() as u64,
        invited_count: members.iter().filter(|(_, m)| m.membership == "invite").count() as u64,
        heroes: members
            .iter()
            .filter(|(u, m)| u != user && (m.membership == "join" || m.membership == "invite"))
            .map(|(u, _)| u.clone())
            .take(5)
            .collect(),
    })
}

/// The stripped state an invitee or knocker sees: a few public state events and their own event.
pub(crate) fn stripped_state(services: &Services, room: &RoomId, own_event: &OwnedEventId) -> Result<Vec<Value>> {
    let rooms = &services.rooms;
    let mut out = Vec::new();
    let strip = |e: &Value| json!({ "type": e["type"], "state_key": e["state_key"], "sender": e["sender"], "content": e["content"] });
    if !rooms.exists(room)? {
        // An invite from another server to a room we are not in (or our knock on one): the state
        // it carried, and the membership event itself.
        let Some(json) = rooms.pdu_json(own_event)? else { return Ok(out) };
        let invite: Value = serde_json::from_slice(&json).unwrap_or_default();
        out.extend(crate::federation::membership::invite_state_of(&invite));
        let mut event = strip(&invite);
        event["event_id"] = json!(own_event);
        out.push(event);
        return Ok(out);
    }
    for kind in &crate::rooms::STRIPPED_STATE {
        if let Some(pdu) = rooms.state_event(room, kind, "")? {
            if let Some(e) = rooms.client_event(&pdu.event_id)? {
                out.push(strip(&e));
            }
        }
    }
    if let Some(e) = rooms.client_event(own_event)? {
        // The inviter's own membership, as Synapse sends it: without it a client cannot tell who
        // invited, and matrix-sdk accepts no room-key bundle shared with the invite (MSC4268).
        let sender = e["sender"].as_str().and_then(|s| ruma::UserId::parse(s).ok());
        if let Some(sender) = sender.filter(|s| e["state_key"].as_str() != Some(s.as_str())) {
            if let Some(member) = rooms.state_event(room, &ruma::events::StateEventType::RoomMember, sender.as_str())? {
                if let Some(m) = rooms.client_event(&member.event_id)? {
                    out.push(strip(&m));
                }
            }
        }
        out.push(strip(&e));
    }
    Ok(out)
}
