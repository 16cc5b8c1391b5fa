//! Simplified sliding sync (MSC4186), what Element X uses: lists of the user's rooms sorted by
//! recency with ranges, room subscriptions, per-room timeline limits and required state, and the
//! to-device, account data, receipts and typing extensions. Like `/v3/sync` it is a consumer of
//! the stream; `pos` is the same token.

pub mod state;

use std::collections::{BTreeMap, BTreeSet};

use ruma::{events::StateEventType, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde_json::{json, Value};

pub use self::state::{Connection, ConnectionKey, Connections};
use super::{long_poll, room_sync, stripped_state, SyncFilter, SyncToken};
use crate::{
    db::codec::{prefix, Be64, Codec},
    error::Result,
    services::Services,
};

/// What to send for each room: the timeline length and which state events.
#[derive(Debug, Clone, Default)]
pub struct RoomSpec {
    pub timeline_limit: usize,
    /// (event type, state key) patterns: `*` matches anything, `$ME` is the user, `$LAZY` (for
    /// members) the senders of the returned timeline.
    pub required_state: Vec<(String, String)>,
}

impl RoomSpec {
    fn merge(&mut self, other: &RoomSpec) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        for pair in &other.required_state {
            if !self.required_state.contains(pair) {
                self.required_state.push(pair.clone());
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ListSpec {
    pub ranges: Vec<(usize, usize)>,
    pub room: RoomSpec,
    pub is_invite: Option<bool>,
    pub is_encrypted: Option<bool>,
}

#[derive(Debug, Clone, Default)]
pub struct Extensions {
    pub to_device: bool,
    pub to_device_since: Option<u64>,
    pub account_data: bool,
    pub receipts: bool,
    pub typing: bool,
    pub e2ee: bool,
}

pub struct SlidingRequest {
    pub user: OwnedUserId,
    pub device: ruma::OwnedDeviceId,
    /// The client's connection id (`conn_id`), empty when it sends none.
    pub conn_id: String,
    pub pos: Option<SyncToken>,
    pub timeout: std::time::Duration,
    pub lists: BTreeMap<String, ListSpec>,
    pub subscriptions: BTreeMap<OwnedRoomId, RoomSpec>,
    pub extensions: Extensions,
}

/// A hero of a room without a name, with what the client needs to name and draw the room.
#[derive(Debug, Clone)]
pub struct Hero {
    pub user_id: OwnedUserId,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
}

#[derive(Debug, Default)]
pub struct SlidingRoom {
    pub name: Option<String>,
    /// The room's avatar as a room list draws it: `None` when unchanged since the connection last
    /// had the room (nothing sent), `Some(None)` when there is none (any more).
    pub avatar: Option<Option<String>>,
    /// The heroes with their display names and avatars, when `summary` names heroes.
    pub heroes: Vec<Hero>,
    pub initial: bool,
    pub invite_state: Option<Vec<Value>>,
    pub timeline: Vec<Value>,
    pub required_state: Vec<Value>,
    pub prev_batch: Option<String>,
    pub limited: bool,
    pub summary: Option<super::RoomSummary>,
    pub bump_stamp: u64,
    pub notification_count: u64,
    pub highlight_count: u64,
}

#[derive(Debug, Default)]
pub struct SlidingResult {
    pub pos: String,
    pub lists: BTreeMap<String, usize>,
    pub rooms: BTreeMap<OwnedRoomId, SlidingRoom>,
    pub to_device: Option<(String, Vec<Value>)>,
    pub account_data: Vec<Value>,
    pub room_account_data: BTreeMap<OwnedRoomId, Vec<Value>>,
    pub receipts: BTreeMap<OwnedRoomId, Value>,
    pub typing: BTreeMap<OwnedRoomId, Value>,
    /// The `e2ee` extension: device list changes, one-time key counts, unused fallback key types.
    pub e2ee: Option<(crate::keys::DeviceLists, BTreeMap<String, u64>, Vec<String>)>,
}

impl SlidingResult {
    fn is_empty(&self) -> bool {
        self.rooms.is_empty()
            && self.to_device.as_ref().is_none_or(|(_, e)| e.is_empty())
            && self.account_data.is_empty()
            && self.room_account_data.is_empty()
            && self.receipts.is_empty()
            && self.typing.is_empty()
            && self.e2ee.as_ref().is_none_or(|(lists, _, _)| lists.is_empty())
    }
}

/// Connections of one device kept at most; the least recently used goes first.
const MAX_CONNECTIONS_PER_DEVICE: usize = 16;
/// A connection unused this long is forgotten (its client is sent its rooms whole again).
const CONNECTION_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

impl Connections {
    fn sent(&self, key: &ConnectionKey) -> BTreeSet<OwnedRoomId> {
        self.map.lock().expect("connections").get(key).map(|c| c.sent.clone()).unwrap_or_default()
    }

    fn record(&self, key: ConnectionKey, reset: bool, newly_sent: Vec<OwnedRoomId>) {
        let now = std::time::Instant::now();
        let mut map = self.map.lock().expect("connections");
        let device = (key.0.clone(), key.1.clone());
        let entry = map.entry(key).or_insert_with(|| Connection { sent: BTreeSet::new(), last_used: now });
        if reset {
            entry.sent.clear();
        }
        entry.sent.extend(newly_sent);
        entry.last_used = now;
        let mut pruned = self.pruned.lock().expect("connections pruned");
        if pruned.is_none_or(|at| now.duration_since(at) > CONNECTION_TTL / 60) {
            map.retain(|_, c| now.duration_since(c.last_used) < CONNECTION_TTL);
            *pruned = Some(now);
        }
        let mut of_device: Vec<(std::time::Instant, String)> = map
            .range((device.0.clone(), device.1.clone(), String::new())..)
            .take_while(|((u, d, _), _)| (u, d) == (&device.0, &device.1))
            .map(|((_, _, id), c)| (c.last_used, id.clone()))
            .collect();
        if of_device.len() > MAX_CONNECTIONS_PER_DEVICE {
            of_device.sort();
            for (_, id) in &of_device[..of_device.len() - MAX_CONNECTIONS_PER_DEVICE] {
                map.remove(&(device.0.clone(), device.1.clone(), id.clone()));
            }
        }
    }

    /// Connections remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map.lock().expect("connections").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Answers a sliding sync request, long-polling like `/v3/sync` when nothing is new.
pub async fn sliding_sync(services: &Services, request: SlidingRequest) -> Result<SlidingResult> {
    if let Some(pos) = request.pos {
        super::checked_position(services, pos.pos)?;
    }
    if let (true, Some(since)) = (request.extensions.to_device, request.extensions.to_device_since) {
        let since = super::checked_position(services, since)?;
        services.to_device.acknowledge(&request.user, &request.device, since)?;
    }
    let mut result = long_poll(
        services,
        &request.user,
        request.timeout,
        request.pos.is_none(),
        |now| compute(services, &request, now),
        SlidingResult::is_empty,
    )
    .await?;
    if !result.rooms.is_empty() {
        if let Ok(token) = SyncToken::parse(&result.pos) {
            services.push.caught_up(token.pos).await;
        }
    }
    for (room, data) in result.rooms.iter_mut() {
        (data.notification_count, data.highlight_count) = crate::push::unread_counts(services, room, &request.user)?;
    }
    Ok(result)
}

/// The latest stream position of a room (its "bump stamp"), for recency ordering.
fn bump_stamp(services: &Services, room: &RoomId) -> Result<u64> {
    let start = (room.to_owned(), Be64(u64::MAX)).encode();
    Ok(match services.db.tables.rooms.roomidpos_eventid.scan_from(prefix(&room.to_owned()), start, false).next() {
        Some(entry) => (entry?.0).1 .0,
        None => 0,
    })
}

fn compute(services: &Services, request: &SlidingRequest, now: SyncToken) -> Result<SlidingResult> {
    let rooms = &services.rooms;
    let user = &request.user;
    let since = request.pos.map(|p| p.pos.min(now.pos));
    let mut result = SlidingResult { pos: now.encode(), ..Default::default() };

    let key = (user.clone(), request.device.clone(), request.conn_id.clone());
    let sent: BTreeSet<OwnedRoomId> = match request.pos {
        None => BTreeSet::new(),
        Some(_) => services.sliding_connections.sent(&key),
    };

    // The user's rooms, most recent first.
    let mut candidates = Vec::new();
    for (room, membership) in rooms.memberships_of(user)? {
        if services.discovery.is_room(&room) {
            continue;
        }
        let stamp = match membership.membership.as_str() {
            "join" => bump_stamp(services, &room)?,
            "invite" => membership.pos,
            "leave" | "ban" if shows_departure(services, user, &room, &membership, &sent, since)? => membership.pos,
            _ => continue,
        };
        candidates.push((stamp, room, membership));
    }
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut newly_sent = Vec::new();
    let direct = direct_rooms(services, user)?;
    // A room marked or unmarked as a direct chat may change its avatar: rooms sent in this
    // answer get theirs again.
    let direct_changed = match since {
        Some(since) => {
            services.account_data.changes(user, Some(since))?.iter().any(|(r, k, _)| r.is_empty() && k == "m.direct")
        }
        None => false,
    };
    let mut selected: BTreeMap<OwnedRoomId, RoomSpec> = BTreeMap::new();
    for (name, list) in &request.lists {
        let mut matching = Vec::new();
        for (_, room, membership) in &candidates {
            let invite = membership.membership == "invite";
            if list.is_invite.is_some_and(|want| want != invite) {
                continue;
            }
            if let Some(want) = list.is_encrypted {
                if rooms.state_event(room, &StateEventType::RoomEncryption, "")?.is_some() != want {
                    continue;
                }
            }
            matching.push(room.clone());
        }
        result.lists.insert(name.clone(), matching.len());
        for (start, end) in &list.ranges {
            for room in matching.iter().skip(*start).take(end.saturating_sub(*start) + 1) {
                selected.entry(room.clone()).or_default().merge(&list.room);
            }
        }
    }
    for (room, spec) in &request.subscriptions {
        if rooms
            .memberships_of(user)?
            .iter()
            .any(|(r, m)| r == room && (m.membership == "join" || m.membership == "invite"))
            && !services.discovery.is_room(room)
        {
            selected.entry(room.clone()).or_default().merge(spec);
        }
    }

    for (room, spec) in &selected {
        let Some((stamp, _, membership)) = candidates.iter().find(|(_, r, _)| r == room) else { continue };
        // A room this connection has not been sent yet (it scrolled into a range, or the server
        // restarted) is sent whole, news or not.
        let known = sent.contains(room);
        let left = matches!(membership.membership.as_str(), "leave" | "ban");
        let initial = since.is_none_or(|s| !left && membership.period_start() > s) || !known;
        // A room with no news is left out, unless the user's own read receipt moved: its unread
        // counts changed, and the client shows them from this answer (regular /sync does the same).
        let since_pos = since.unwrap_or(0);
        if !initial && *stamp <= since_pos && !services.receipts.own_receipt_after(room, user, since_pos)? {
            continue;
        }
        newly_sent.push(room.clone());
        let mut data = SlidingRoom { initial, bump_stamp: *stamp, ..Default::default() };
        let is_dm = direct.contains(room);
        if membership.membership == "invite" {
            let stripped = stripped_state(services, room, &membership.event_id)?;
            data.avatar = Some(invite_avatar(&stripped, user, is_dm));
            data.invite_state = Some(stripped);
        } else {
            // A room the user left is seen as it was when they left: its timeline up to their
            // departure, its state then (with their own leave, which tells the client).
            let until = if left { membership.pos.min(now.pos) } else { now.pos };
            let snapshot = if left {
                rooms.snapshot_before(room, until.saturating_add(1))?
            } else {
                rooms.room(room)?.map(|record| record.snapshot)
            };
            let Some(snapshot) = snapshot else { continue };
            let filter = SyncFilter { timeline_limit: spec.timeline_limit.max(1), ..Default::default() };
            let from = if initial { None } else { since };
            let timeline = room_sync(services, (user, &request.device), room, from, until, false, &filter)?;
            if spec.timeline_limit > 0 {
                data.timeline = timeline.timeline;
                data.limited = timeline.limited;
                data.prev_batch = timeline.prev_batch;
            }
            data.summary = match timeline.summary {
                _ if left => None,
                Some(summary) => Some(summary),
                None if initial => Some(super::summary(services, user, room)?),
                None => None,
            };
            // A room already sent gets what changed since: state events of the wanted kinds and
            // the members of new senders (`$LAZY`), so names, avatars, encryption and join rules
            // stay current in the client.
            let changed = if initial { None } else { changed_state_keys(services, room, since.unwrap_or(0), until)? };
            data.required_state =
                required_state(services, user, snapshot, &spec.required_state, &data.timeline, changed.as_ref())?;
            data.name = state_string(services, snapshot, &StateEventType::RoomName, "name")?;
            // The avatar goes with the room's first answer on the connection, then again only
            // when what it is drawn from changed: the room's `m.room.avatar`, or in a direct chat
            // the members (the other member's avatar, or who the other member is).
            let avatar_changed = initial
                || direct_changed
                || match &changed {
                    None => true,
                    Some(keys) => keys.iter().any(|(kind, key)| {
                        (kind == "m.room.avatar" && key.is_empty()) || (is_dm && kind == "m.room.member")
                    }),
                };
            if avatar_changed && !left {
                data.avatar = Some(room_avatar(services, user, room, is_dm)?);
            }
        }
        if data.invite_state.is_some() {
            data.name = rooms
                .state_event(room, &StateEventType::RoomName, "")?
                .and_then(|e| serde_json::from_str::<Value>(e.content.get()).ok())
                .and_then(|c| c["name"].as_str().map(str::to_owned));
        }
        if let Some(summary) = data.summary.as_ref().filter(|_| data.name.is_none()) {
            data.heroes = summary
                .heroes
                .iter()
                .map(|hero| {
                    let content = member_content(services, room, hero)?;
                    Ok(Hero {
                        user_id: hero.clone(),
                        displayname: content["displayname"].as_str().map(str::to_owned),
                        avatar_url: content["avatar_url"].as_str().filter(|u| !u.is_empty()).map(str::to_owned),
                    })
                })
                .collect::<Result<_>>()?;
        }
        result.rooms.insert(room.clone(), data);
    }

    services.sliding_connections.record(key, request.pos.is_none(), newly_sent);
    let ext = &request.extensions;
    if ext.to_device {
        let after = ext.to_device_since.unwrap_or(0);
        let events = services.to_device.pending(user, &request.device, after, now.pos)?;
        result.to_device = Some((now.pos.to_string(), events));
    }
    if ext.e2ee {
        let lists = match since {
            Some(since) => services.keys.device_list_changes(&services.rooms, user, since, now.pos)?,
            None => Default::default(),
        };
        let counts = services.keys.one_time_key_counts(user, &request.device)?;
        let fallback = services.keys.unused_fallback_key_types(user, &request.device)?;
        result.e2ee = Some((lists, counts, fallback));
    }
    if ext.account_data {
        for (room, kind, content) in services.account_data.changes(user, since)? {
            let event = json!({ "type": kind, "content": content });
            match OwnedRoomId::try_from(room) {
                Ok(room) => result.room_account_data.entry(room).or_default().push(event),
                Err(_) => result.account_data.push(event),
            }
        }
    }
    for room in selected.keys() {
        if ext.receipts {
            if let Some(content) = services.receipts.receipt_content(room, since, now.pos, user)? {
                result.receipts.insert(room.clone(), json!({ "type": "m.receipt", "content": content }));
            }
        }
        if ext.typing {
            let typing_since = request.pos.map(|p| p.typing);
            if let Some(users) = services.typing.typing_in(room, typing_since) {
                result.typing.insert(room.clone(), json!({ "type": "m.typing", "content": { "user_ids": users } }));
            }
        }
    }
    Ok(result)
}

/// Whether a room the user is no longer in (left, kicked, banned, an invite rejected or
/// withdrawn) is in the lists. MSC4186: a room they were removed from having been joined (kicked,
/// banned) always is; any other, once, on a connection that had it before, so its client learns
/// the room is gone (or the invite is) instead of showing it still there.
fn shows_departure(
    services: &Services,
    user: &UserId,
    room: &RoomId,
    membership: &crate::rooms::MembershipRecord,
    sent: &BTreeSet<OwnedRoomId>,
    since: Option<u64>,
) -> Result<bool> {
    if sent.contains(room) && since.is_some_and(|s| membership.pos > s) {
        return Ok(true);
    }
    let removed = services.rooms.pdu(&membership.event_id)?.is_some_and(|event| event.sender != *user);
    Ok(removed && services.rooms.window(user, room)?.ever_joined())
}

/// A string field of a state event's content in a state snapshot.
fn state_string(services: &Services, snapshot: u64, kind: &StateEventType, field: &str) -> Result<Option<String>> {
    let Some(id) = services.rooms.state_event_id_in(snapshot, kind, "")? else { return Ok(None) };
    Ok(services
        .rooms
        .pdu(&id)?
        .and_then(|e| serde_json::from_str::<Value>(e.content.get()).ok())
        .and_then(|c| c[field].as_str().map(str::to_owned)))
}

/// The rooms the user's `m.direct` account data lists as direct chats (with anyone).
fn direct_rooms(services: &Services, user: &UserId) -> Result<BTreeSet<OwnedRoomId>> {
    let Some(content) = services.account_data.get(user, None, "m.direct")? else { return Ok(BTreeSet::new()) };
    Ok(content
        .as_object()
        .into_iter()
        .flat_map(|by_user| by_user.values())
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|room| room.as_str().and_then(|r| OwnedRoomId::try_from(r).ok()))
        .collect())
}

/// The content of `user`'s current member event in the room (`null` when there is none).
fn member_content(services: &Services, room: &RoomId, user: &UserId) -> Result<Value> {
    Ok(services
        .rooms
        .state_event(room, &StateEventType::RoomMember, user.as_str())?
        .and_then(|e| serde_json::from_str(e.content.get()).ok())
        .unwrap_or_default())
}

/// An `mxc://` URL from a content field; an empty or missing one is no avatar.
fn avatar_url(content: &Value, field: &str) -> Option<String> {
    content[field].as_str().filter(|url| !url.is_empty()).map(str::to_owned)
}

/// The avatar a room list shows for a room (MSC4186's `avatar`): the room's own `m.room.avatar`
/// when it has one; otherwise, for a direct chat with one other member (joined or invited), that
/// member's avatar — what the sliding sync proxy Element X was built against computes, so a DM
/// shows its partner's face without the client loading members.
fn room_avatar(services: &Services, user: &UserId, room: &RoomId, is_dm: bool) -> Result<Option<String>> {
    let own = services
        .rooms
        .state_event(room, &StateEventType::RoomAvatar, "")?
        .and_then(|e| serde_json::from_str::<Value>(e.content.get()).ok())
        .and_then(|content| avatar_url(&content, "url"));
    if own.is_some() || !is_dm {
        return Ok(own);
    }
    let others: Vec<OwnedUserId> = services
        .rooms
        .members(room)?
        .into_iter()
        .filter(|(member, m)| member != user && (m.membership == "join" || m.membership == "invite"))
        .map(|(member, _)| member)
        .collect();
    match others.as_slice() {
        [partner] => Ok(avatar_url(&member_content(services, room, partner)?, "avatar_url")),
        _ => Ok(None),
    }
}

/// [`room_avatar`] for an invite, read from the stripped state the invitee is sent (nothing
/// else of the room is theirs to see): the room's avatar, or for a direct chat the inviter's.
/// A direct chat is one in `m.direct` or one the invite itself says is (`is_direct`).
fn invite_avatar(stripped: &[Value], user: &UserId, is_dm: bool) -> Option<String> {
    let find = |kind: &str, key: &str| stripped.iter().find(|e| e["type"] == kind && e["state_key"] == key);
    if let Some(url) = find("m.room.avatar", "").and_then(|e| avatar_url(&e["content"], "url")) {
        return Some(url);
    }
    let invite = find("m.room.member", user.as_str())?;
    if !is_dm && invite["content"]["is_direct"] != true {
        return None;
    }
    let inviter = invite["sender"].as_str().filter(|s| *s != user.as_str())?;
    find("m.room.member", inviter).and_then(|e| avatar_url(&e["content"], "avatar_url"))
}

/// State changes of a room scanned at most, per incremental response; past this the whole
/// required state is sent again.
const MAX_CHANGES_SCANNED: usize = 1_000;

/// The `(type, state_key)` pairs whose state changed in `(since, now]`; `None` when there were
/// too many events to look at (then everything wanted is sent).
fn changed_state_keys(
    services: &Services,
    room: &RoomId,
    since: u64,
    now: u64,
) -> Result<Option<BTreeSet<(String, String)>>> {
    let mut keys = BTreeSet::new();
    for (scanned, entry) in services.rooms.scan_ranges(room, vec![(since.saturating_add(1), now)], true).enumerate() {
        if scanned >= MAX_CHANGES_SCANNED {
            return Ok(None);
        }
        let (_, id) = entry?;
        if let Some(pdu) = services.rooms.pdu(&id)? {
            if let Some(key) = &pdu.state_key {
                keys.insert((pdu.kind.to_string(), key.clone()));
            }
        }
    }
    Ok(Some(keys))
}

/// The state events of `snapshot` (the room's current state, or the state the user left it in)
/// matching the requested `(type, state_key)` patterns; with `changed`, only those among the
/// changed keys, plus the member events of the timeline's senders when `$LAZY` members are
/// wanted.
fn required_state(
    services: &Services,
    user: &UserId,
    snapshot: u64,
    wanted: &[(String, String)],
    timeline: &[Value],
    changed: Option<&BTreeSet<(String, String)>>,
) -> Result<Vec<Value>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let senders: BTreeSet<&str> = timeline.iter().filter_map(|e| e["sender"].as_str()).collect();
    let matches = |kind: &str, key: &str| {
        wanted.iter().any(|(t, k)| {
            (t == "*" || t == kind)
                && (k == "*"
                    || k == key
                    || (k == "$ME" && key == user.as_str())
                    || (k == "$LAZY" && kind == "m.room.member" && (senders.contains(key) || key == user.as_str())))
        })
    };
    let mut out = Vec::new();
    if let Some(changed) = changed {
        // Only the changed keys and the new senders' members: no walk over the whole state.
        let lazy = wanted.iter().any(|(t, k)| k == "$LAZY" && (t == "*" || t == "m.room.member"));
        let mut keys = changed.clone();
        if lazy {
            keys.extend(senders.iter().map(|s| ("m.room.member".to_owned(), (*s).to_owned())));
        }
        for (kind, key) in keys {
            if !matches(&kind, &key) {
                continue;
            }
            if let Some(id) = services.rooms.state_event_id_in(snapshot, &kind.as_str().into(), &key)? {
                if let Some(event) = services.rooms.client_event(&id)? {
                    out.push(event);
                }
            }
        }
        return Ok(out);
    }
    for ((kind, key), id) in services.rooms.full_state(snapshot)? {
        if matches(&kind.to_string(), &key) {
            if let Some(event) = services.rooms.client_event(&id)? {
                out.push(event);
            }
        }
    }
    Ok(out)
}
