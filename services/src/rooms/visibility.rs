//! History visibility: which events of a room a user may read, decided in one place.
//!
//! Every read that hands room events to a client — `/messages`, `/event`, `/context`,
//! `/relations`, `/notifications` and unread counts, `/sync` and sliding sync timelines — asks a
//! [`Reader`]; federation will ask the same [`Window`] on behalf of a server's users.
//!
//! The spec's rule (v1.19, "History visibility") looks, for each event, at the room's
//! `m.room.history_visibility` and at the reader's membership *at that event*. Both change only at
//! a handful of a room's events, so a window is built from two small indexes written by the event
//! write path — the room's visibility changes (`roomidpos_visibility`) and the reader's membership
//! changes (`roomiduserpos_membership`) — and turned into the ranges of stream positions the reader
//! may see. Deciding one event is then a binary search, and a timeline scan jumps over a stretch
//! the reader may not see without reading it.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

use ruma::{
    canonical_json::redact, events::StateEventType, CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId,
    OwnedUserId, RoomId, UserId,
};
use serde_json::Value;

use super::{pdu, Rooms};
use crate::{
    db::codec::{prefix, prefix2, Be64, Codec, Json},
    error::{Error, Result},
};

/// A room's `history_visibility` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryVisibility {
    Joined,
    Invited,
    Shared,
    WorldReadable,
}

impl HistoryVisibility {
    /// Reads the setting. A value this server does not know is taken as the strictest, `joined`:
    /// an unknown word must never widen who reads a room.
    pub fn parse(value: &str) -> Self {
        match value {
            "world_readable" => Self::WorldReadable,
            "shared" => Self::Shared,
            "invited" => Self::Invited,
            _ => Self::Joined,
        }
    }

    /// The setting an `m.room.history_visibility` content gives.
    pub fn of_content(content: &Value) -> Self {
        Self::parse(content["history_visibility"].as_str().unwrap_or(""))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Joined => "joined",
            Self::Invited => "invited",
            Self::Shared => "shared",
            Self::WorldReadable => "world_readable",
        }
    }
}

/// A membership as far as reading is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Join,
    Invite,
    Knock,
    Leave,
    Ban,
}

impl Membership {
    pub fn parse(value: &str) -> Self {
        match value {
            "join" => Self::Join,
            "invite" => Self::Invite,
            "knock" => Self::Knock,
            "ban" => Self::Ban,
            _ => Self::Leave,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Invite => "invite",
            Self::Knock => "knock",
            Self::Leave => "leave",
            Self::Ban => "ban",
        }
    }
}

/// What one user may read of one room's history: the positions of the room's visibility changes
/// and of the user's membership changes, and the ranges of positions they make readable.
#[derive(Debug, Clone, Default)]
pub struct Window {
    memberships: Vec<(u64, Membership)>,
    visibility: Vec<(u64, HistoryVisibility)>,
    /// Inclusive, ascending, disjoint and not adjacent.
    ranges: Vec<(u64, u64)>,
}

impl Window {
    /// A window from the user's membership changes and the room's visibility changes (each as
    /// `(stream position, value)`, in any order).
    pub fn new(mut memberships: Vec<(u64, Membership)>, mut visibility: Vec<(u64, HistoryVisibility)>) -> Self {
        memberships.sort_by_key(|(pos, _)| *pos);
        visibility.sort_by_key(|(pos, _)| *pos);
        let mut window = Self { memberships, visibility, ranges: Vec::new() };
        window.ranges = window.compute_ranges();
        window
    }

    /// Between two consecutive change points nothing the rule reads changes, so each stretch is
    /// decided by its first position and each change point on its own.
    fn compute_ranges(&self) -> Vec<(u64, u64)> {
        let mut points: Vec<u64> =
            self.memberships.iter().map(|(p, _)| *p).chain(self.visibility.iter().map(|(p, _)| *p)).collect();
        points.sort_unstable();
        points.dedup();
        let mut segments = Vec::with_capacity(points.len() * 2 + 1);
        let mut next = 0u64;
        for point in points {
            if point > next {
                segments.push((next, point - 1));
            }
            segments.push((point, point));
            next = point.saturating_add(1);
            if point == u64::MAX {
                break;
            }
        }
        if segments.last().is_none_or(|(_, hi)| *hi < u64::MAX) {
            segments.push((next, u64::MAX));
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (lo, hi) in segments {
            if !self.decide(lo) {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if last.1.saturating_add(1) == lo => last.1 = hi,
                _ => ranges.push((lo, hi)),
            }
        }
        ranges
    }

    fn visibility_at(&self, pos: u64, after: bool) -> HistoryVisibility {
        let n = self.visibility.partition_point(|(p, _)| if after { *p <= pos } else { *p < pos });
        // A room without the state event is `shared`, as the spec says.
        n.checked_sub(1).map_or(HistoryVisibility::Shared, |i| self.visibility[i].1)
    }

    fn membership_at(&self, pos: u64, after: bool) -> Option<Membership> {
        let n = self.memberships.partition_point(|(p, _)| if after { *p <= pos } else { *p < pos });
        n.checked_sub(1).map(|i| self.memberships[i].1)
    }

    fn joins_from(&self, pos: u64) -> bool {
        self.memberships.iter().any(|(p, m)| *p >= pos && *m == Membership::Join)
    }

    /// The spec's rule for the event at `pos`. The state *before* the event decides; for a change
    /// of the visibility or of the reader's own membership, the state after it may allow too. The
    /// reader always sees their own membership events (their invite, their kick, their rejected
    /// invite), as Synapse does, so a client can tell why a room moved.
    fn decide(&self, pos: u64) -> bool {
        if self.memberships.iter().any(|(p, _)| *p == pos) {
            return true;
        }
        let joins_later = self.joins_from(pos);
        [false, true].into_iter().any(|visibility_after| {
            [false, true].into_iter().any(|membership_after| {
                allowed(
                    self.visibility_at(pos, visibility_after),
                    self.membership_at(pos, membership_after),
                    joins_later,
                )
            })
        })
    }

    /// Whether the event at stream position `pos` is readable.
    pub fn may_see(&self, pos: u64) -> bool {
        let i = self.ranges.partition_point(|(_, hi)| *hi < pos);
        self.ranges.get(i).is_some_and(|(lo, _)| *lo <= pos)
    }

    /// The readable ranges clipped to `[lo, hi]`, ascending.
    pub fn ranges_within(&self, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        self.ranges.iter().filter(|(a, b)| *b >= lo && *a <= hi).map(|(a, b)| ((*a).max(lo), (*b).min(hi))).collect()
    }

    /// The reader's membership once the event at `pos` is applied (their own membership event
    /// counts), `leave` when they had none yet: the spec's `unsigned.membership`.
    pub fn membership_after(&self, pos: u64) -> Membership {
        self.membership_at(pos, true).unwrap_or(Membership::Leave)
    }

    /// Whether the reader was a joined member when the event at `pos` was sent.
    pub fn joined_at(&self, pos: u64) -> bool {
        self.membership_at(pos, false) == Some(Membership::Join)
    }

    pub fn is_joined(&self) -> bool {
        self.memberships.last().is_some_and(|(_, m)| *m == Membership::Join)
    }

    pub fn ever_joined(&self) -> bool {
        self.memberships.iter().any(|(_, m)| *m == Membership::Join)
    }

    pub fn world_readable_now(&self) -> bool {
        self.visibility.last().is_some_and(|(_, v)| *v == HistoryVisibility::WorldReadable)
    }

    pub fn world_readable_at(&self, pos: u64) -> bool {
        self.visibility_at(pos, false) == HistoryVisibility::WorldReadable
    }

    /// The event that ended the reader's last joined period (their leave, kick or ban), when they
    /// were joined once and are not now: where a departed member's view of the room stops.
    pub fn departure(&self) -> Option<u64> {
        let last_join = self.memberships.iter().rposition(|(_, m)| *m == Membership::Join)?;
        self.memberships.get(last_join + 1).map(|(pos, _)| *pos)
    }
}

/// What another server may be sent of a room's history (`/backfill`, `/event`, `/state`,
/// `/get_missing_events` on its behalf): the spec's rule for servers. An event is visible to a
/// server when its setting was `world_readable` or `shared`, or when one of the server's users
/// could see it by membership at that event (joined; invited, where the setting is `invited`).
#[derive(Debug, Clone, Default)]
pub struct ServerWindow {
    /// The membership changes of each of the server's users in the room.
    users: Vec<Window>,
    visibility: Vec<(u64, HistoryVisibility)>,
}

impl ServerWindow {
    pub fn new(users: Vec<Vec<(u64, Membership)>>, visibility: Vec<(u64, HistoryVisibility)>) -> Self {
        let mut visibility = visibility;
        visibility.sort_by_key(|(pos, _)| *pos);
        let users = users.into_iter().map(|m| Window::new(m, visibility.clone())).collect();
        Self { users, visibility }
    }

    /// Whether one of the server's users was a joined member when the event at `pos` was sent:
    /// the servers an event goes to are those in the room at that event.
    pub fn had_member_at(&self, pos: u64) -> bool {
        self.users.iter().any(|user| user.joined_at(pos))
    }

    pub fn may_see(&self, pos: u64) -> bool {
        let view = Window { memberships: Vec::new(), visibility: self.visibility.clone(), ranges: Vec::new() };
        let open = [false, true].into_iter().any(|after| {
            matches!(view.visibility_at(pos, after), HistoryVisibility::Shared | HistoryVisibility::WorldReadable)
        });
        open || self.users.iter().any(|user| {
            [false, true].into_iter().any(|after| {
                let membership = user.membership_at(pos, after);
                membership == Some(Membership::Join)
                    || (membership == Some(Membership::Invite)
                        && [false, true].into_iter().any(|v| user.visibility_at(pos, v) == HistoryVisibility::Invited))
            })
        })
    }
}

fn allowed(visibility: HistoryVisibility, membership: Option<Membership>, joins_later: bool) -> bool {
    match visibility {
        HistoryVisibility::WorldReadable => true,
        _ if membership == Some(Membership::Join) => true,
        HistoryVisibility::Shared => joins_later,
        HistoryVisibility::Invited => membership == Some(Membership::Invite),
        HistoryVisibility::Joined => false,
    }
}

/// A user reading a room: decides each event by the user's [`Window`], built only when needed —
/// events after the user's current join are readable whatever the setting, so a joined member
/// reading recent events never builds one.
pub struct Reader<'a> {
    rooms: &'a Rooms,
    room: OwnedRoomId,
    user: OwnedUserId,
    /// Where the user's current joined period began, when they are joined.
    joined_since: Option<u64>,
    window: OnceLock<Window>,
    /// Whether senders asked for their messages to be erased (`erase: true` at deactivation).
    erased: Mutex<HashMap<String, bool>>,
}

impl<'a> Reader<'a> {
    pub fn room(&self) -> &RoomId {
        &self.room
    }

    pub fn window(&self) -> Result<&Window> {
        if let Some(window) = self.window.get() {
            return Ok(window);
        }
        let window = self.rooms.window(&self.user, &self.room)?;
        Ok(self.window.get_or_init(|| window))
    }

    pub fn is_joined(&self) -> bool {
        self.joined_since.is_some()
    }

    /// Where the user's current joined period began, when joined: every later event is readable.
    pub fn joined_since(&self) -> Option<u64> {
        self.joined_since
    }

    pub fn may_see(&self, pos: u64) -> Result<bool> {
        if self.joined_since.is_some_and(|j| pos > j) {
            return Ok(true);
        }
        Ok(self.window()?.may_see(pos))
    }

    /// Whether the user may read the room's state: while joined, in a world-readable room, or as
    /// it was when they left after being joined. Someone who only knocked, was invited or was
    /// banned before joining never may.
    pub fn may_read_state(&self) -> Result<bool> {
        if self.is_joined() {
            return Ok(true);
        }
        let window = self.window()?;
        Ok(window.ever_joined() || window.world_readable_now())
    }

    /// The state snapshot the user may read: the current one while joined or in a world-readable
    /// room, the one after their departure once they left; `403` when they may read none.
    pub fn state_snapshot(&self) -> Result<u64> {
        let record = self.rooms.room(&self.room)?.ok_or_else(|| Error::forbidden("you are not in this room"))?;
        if self.is_joined() {
            return Ok(record.snapshot);
        }
        let window = self.window()?;
        if window.world_readable_now() {
            return Ok(record.snapshot);
        }
        let departure = window.departure().ok_or_else(|| Error::forbidden("you are not in this room"))?;
        self.rooms
            .snapshot_before(&self.room, departure.saturating_add(1))?
            .ok_or_else(|| Error::Internal("no state at departure".into()))
    }

    /// Joined members, aliases and the like describe the room as it is now: only for members and
    /// world-readable rooms.
    pub fn require_current(&self) -> Result<()> {
        if self.is_joined() || self.window()?.world_readable_now() {
            Ok(())
        } else {
            Err(Error::forbidden("you are not in this room"))
        }
    }

    /// The events of the timeline in `[lo, hi]` the user may see, in stream order (`forward`) or
    /// newest first, reading only the readable stretches.
    pub fn timeline(
        &self,
        lo: u64,
        hi: u64,
        forward: bool,
    ) -> Box<dyn Iterator<Item = Result<(u64, OwnedEventId)>> + '_> {
        if lo > hi {
            return Box::new(std::iter::empty());
        }
        // Positions from `open` on are after the current join: readable without a window.
        let open = self.joined_since.map(|j| j.saturating_add(1)).filter(|o| *o <= hi);
        let (plain, windowed) = match open {
            Some(o) if o > lo => (Some((o, hi)), Some((lo, o - 1))),
            Some(_) => (Some((lo, hi)), None),
            None => (None, Some((lo, hi))),
        };
        let plain: Box<dyn Iterator<Item = _>> = match plain {
            Some(range) => Box::new(self.rooms.scan_ranges(&self.room, vec![range], forward)),
            None => Box::new(std::iter::empty()),
        };
        let windowed: Box<dyn Iterator<Item = _>> = match windowed {
            Some((a, b)) => Box::new(std::iter::once(()).flat_map(move |_| -> Box<dyn Iterator<Item = _>> {
                match self.window() {
                    Ok(window) => Box::new(self.rooms.scan_ranges(&self.room, window.ranges_within(a, b), forward)),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            })),
            None => Box::new(std::iter::empty()),
        };
        if forward {
            Box::new(windowed.chain(plain))
        } else {
            Box::new(plain.chain(windowed))
        }
    }

    /// The event at `pos` in client format as this user may see it: `None` when it is not
    /// readable (or unknown), pruned by the redaction algorithm when its sender asked for erasure
    /// and the user was not joined when it was sent.
    /// With the bundled aggregations the user may see (latest edit, thread summary, references).
    pub fn event(&self, pos: u64, event_id: &EventId) -> Result<Option<Value>> {
        let Some(mut event) = self.event_plain(pos, event_id)? else { return Ok(None) };
        self.bundle(event_id, &mut event)?;
        Ok(Some(event))
    }

    /// Bundled aggregations (spec "Aggregations of child events"): the latest edit by the
    /// original sender in `m.replace`, the thread summary in `m.thread`, references in
    /// `m.reference` — only what this reader may see, and nothing on a redacted event.
    fn bundle(&self, event_id: &EventId, event: &mut Value) -> Result<()> {
        if event["unsigned"].get("redacted_because").is_some() {
            return Ok(());
        }
        let mut edit: Option<(u64, OwnedEventId, Value)> = None;
        let (mut thread_latest, mut thread_count, mut participated) = (None, 0u64, false);
        let mut references = Vec::new();
        let children = self.rooms.db.tables.rooms.parentpos_childeventid.scan_prefix(prefix(&event_id.to_owned()));
        for entry in children {
            let ((_, Be64(pos)), child_id) = entry?;
            let Some(child) = self.event_plain(pos, &child_id)? else { continue };
            let relation = &child["content"]["m.relates_to"];
            if child["room_id"] != event["room_id"] || relation["event_id"].as_str() != Some(event_id.as_str()) {
                continue;
            }
            match relation["rel_type"].as_str() {
                Some("m.replace")
                    if event.get("state_key").is_none()
                        && child["sender"] == event["sender"]
                        && child["type"] == event["type"]
                        && child["content"]["m.new_content"].is_object() =>
                {
                    let ts = child["origin_server_ts"].as_u64().unwrap_or(0);
                    if edit.as_ref().is_none_or(|(t, id, _)| (ts, child_id.as_str()) > (*t, id.as_str())) {
                        edit = Some((ts, child_id, child));
                    }
                }
                Some("m.thread") => {
                    thread_count += 1;
                    participated |= child["sender"].as_str() == Some(self.user.as_str());
                    thread_latest = Some(child);
                }
                Some("m.reference") => references.push(serde_json::json!({ "event_id": child_id })),
                _ => {}
            }
        }
        if edit.is_none() && thread_latest.is_none() && references.is_empty() {
            return Ok(());
        }
        let mut relations = serde_json::Map::new();
        if let Some((_, _, edit)) = edit {
            relations.insert("m.replace".into(), edit);
        }
        if let Some(latest) = thread_latest {
            let participated = participated || event["sender"].as_str() == Some(self.user.as_str());
            relations.insert(
                "m.thread".into(),
                serde_json::json!({
                    "latest_event": latest,
                    "count": thread_count,
                    "current_user_participated": participated,
                }),
            );
        }
        if !references.is_empty() {
            relations.insert("m.reference".into(), serde_json::json!({ "chunk": references }));
        }
        if let Some(unsigned) =
            event.as_object_mut().map(|e| e.entry("unsigned").or_insert_with(|| serde_json::json!({})))
        {
            if let Some(unsigned) = unsigned.as_object_mut() {
                unsigned.insert("m.relations".into(), Value::Object(relations));
            }
        }
        Ok(())
    }

    /// The event without bundled aggregations (for the children bundled into another).
    fn event_plain(&self, pos: u64, event_id: &EventId) -> Result<Option<Value>> {
        if !self.may_see(pos)? {
            return Ok(None);
        }
        let Some(mut event) = self.rooms.client_event(event_id)? else { return Ok(None) };
        let joined_then = self.joined_since.is_some_and(|j| pos > j) || self.window()?.joined_at(pos);
        if !joined_then && self.sender_erased(&event)? {
            let Some(mut pruned) = self.rooms.pruned_client_event(event_id)? else { return Ok(None) };
            self.add_membership(pos, &mut pruned)?;
            return Ok(Some(pruned));
        }
        self.add_prev_content(&mut event)?;
        self.add_membership(pos, &mut event)?;
        Ok(Some(event))
    }

    /// `unsigned.membership` (spec v1.11): the reader's membership at the event, the event's own
    /// change included. matrix-sdk reads it to tell "sent before you joined" from a lost key when
    /// an event cannot be decrypted. Decided from what deciding visibility already reads: inside
    /// the current joined period it is `join` without a window; before it, the window that
    /// [`Reader::may_see`] built for the same event answers.
    fn add_membership(&self, pos: u64, event: &mut Value) -> Result<()> {
        let membership = match self.joined_since {
            Some(since) if pos >= since => Membership::Join,
            _ => self.window()?.membership_after(pos),
        };
        if let Some(object) = event.as_object_mut() {
            let unsigned = object.entry("unsigned").or_insert_with(|| Value::Object(Default::default()));
            if let Some(unsigned) = unsigned.as_object_mut() {
                unsigned.insert("membership".into(), Value::from(membership.as_str()));
            }
        }
        Ok(())
    }

    /// `prev_content` and `prev_sender` of a state event, from the event it replaced, when this
    /// reader may see that one (`replaces_state` is there regardless, as the spec says).
    fn add_prev_content(&self, event: &mut Value) -> Result<()> {
        let Some(replaced) = event["unsigned"]["replaces_state"].as_str() else { return Ok(()) };
        let Ok(replaced) = ruma::OwnedEventId::try_from(replaced) else { return Ok(()) };
        let Some(meta) = self.rooms.meta(&replaced)? else { return Ok(()) };
        if !self.may_see(meta.pos)? {
            return Ok(());
        }
        let Some(previous) = self.rooms.client_event(&replaced)? else { return Ok(()) };
        if let Some(unsigned) = event["unsigned"].as_object_mut() {
            unsigned.insert("prev_content".into(), previous["content"].clone());
            unsigned.insert("prev_sender".into(), previous["sender"].clone());
        }
        Ok(())
    }

    fn sender_erased(&self, event: &Value) -> Result<bool> {
        let Some(sender) = event["sender"].as_str() else { return Ok(false) };
        if let Some(erased) = self.erased.lock().expect("erased senders").get(sender) {
            return Ok(*erased);
        }
        let erased = match UserId::parse(sender) {
            Ok(user) if self.rooms.is_local(&user) => {
                self.rooms.db.tables.users.userid_account.get(&user)?.is_some_and(|Json(a)| a.erased)
            }
            _ => false,
        };
        self.erased.lock().expect("erased senders").insert(sender.to_owned(), erased);
        Ok(erased)
    }
}

impl Rooms {
    /// The user's window on the room's history, from the two visibility indexes.
    pub fn window(&self, user: &UserId, room: &RoomId) -> Result<Window> {
        let tables = &self.db.tables;
        let mut memberships = Vec::new();
        for entry in tables.rooms.roomiduserpos_membership.scan_prefix(prefix2(&room.to_owned(), &user.to_owned())) {
            let ((_, _, Be64(pos)), membership) = entry?;
            memberships.push((pos, Membership::parse(&membership)));
        }
        Ok(Window::new(memberships, self.visibility_history(room)?))
    }

    /// Whether the room's history is `world_readable` now (its current state says so).
    pub fn world_readable(&self, room: &RoomId) -> Result<bool> {
        let Some(event) = self.state_event(room, &ruma::events::StateEventType::RoomHistoryVisibility, "")? else {
            return Ok(false);
        };
        let content: Value = serde_json::from_str(event.content.get()).unwrap_or_default();
        Ok(HistoryVisibility::of_content(&content) == HistoryVisibility::WorldReadable)
    }

    /// What `server` may be sent of the room's history (federation reads ask this, event by
    /// event, with the same indexes as a user's [`Window`]).
    pub fn server_window(&self, server: &ruma::ServerName, room: &RoomId) -> Result<ServerWindow> {
        match self.windows_by_server(room, Some(server))?.remove(server) {
            Some(window) => Ok(window),
            None => Ok(ServerWindow::new(Vec::new(), self.visibility_history(room)?)),
        }
    }

    /// The [`ServerWindow`] of every server with a user in the room's membership history, read
    /// in one scan (the federation sender asks it of each room once per state snapshot).
    pub fn server_windows(&self, room: &RoomId) -> Result<HashMap<ruma::OwnedServerName, ServerWindow>> {
        self.windows_by_server(room, None)
    }

    fn windows_by_server(
        &self,
        room: &RoomId,
        only: Option<&ruma::ServerName>,
    ) -> Result<HashMap<ruma::OwnedServerName, ServerWindow>> {
        let mut users: std::collections::BTreeMap<OwnedUserId, Vec<(u64, Membership)>> = Default::default();
        for entry in self.db.tables.rooms.roomiduserpos_membership.scan_prefix(prefix(&room.to_owned())) {
            let ((_, user, Be64(pos)), membership) = entry?;
            if only.is_none_or(|server| user.server_name() == server) {
                users.entry(user).or_default().push((pos, Membership::parse(&membership)));
            }
        }
        let mut by_server: HashMap<ruma::OwnedServerName, Vec<Vec<(u64, Membership)>>> = HashMap::new();
        for (user, memberships) in users {
            by_server.entry(user.server_name().to_owned()).or_default().push(memberships);
        }
        let visibility = self.visibility_history(room)?;
        Ok(by_server
            .into_iter()
            .map(|(server, users)| (server, ServerWindow::new(users, visibility.clone())))
            .collect())
    }

    /// The room's history visibility changes, as `(stream position, value)`.
    fn visibility_history(&self, room: &RoomId) -> Result<Vec<(u64, HistoryVisibility)>> {
        let mut visibility = Vec::new();
        for entry in self.db.tables.rooms.roomidpos_visibility.scan_prefix(prefix(&room.to_owned())) {
            let ((_, Be64(pos)), value) = entry?;
            visibility.push((pos, HistoryVisibility::parse(&value)));
        }
        Ok(visibility)
    }

    /// Opens a room for reading by `user`: `403` when they have never been part of it and it is
    /// not world-readable. What they may see of it is then decided event by event.
    pub fn reader(&self, user: &UserId, room: &RoomId) -> Result<Reader<'_>> {
        if !self.exists(room)? {
            return Err(Error::forbidden("you are not in this room"));
        }
        let membership = self.membership(user, room)?;
        let joined_since = membership.as_ref().filter(|m| m.membership == "join").map(|m| m.period_start());
        let reader = Reader {
            rooms: self,
            room: room.to_owned(),
            user: user.to_owned(),
            joined_since,
            window: OnceLock::new(),
            erased: Mutex::new(HashMap::new()),
        };
        // No membership record: never part of the room, or it was forgotten (which gives up
        // its history for good); only a world-readable room is open then.
        if membership.is_none() && !reader.window()?.world_readable_now() {
            return Err(Error::forbidden("you are not in this room"));
        }
        Ok(reader)
    }

    /// `(position, event id)` of the room's timeline within the given inclusive ranges.
    pub fn scan_ranges(
        &self,
        room: &RoomId,
        ranges: Vec<(u64, u64)>,
        forward: bool,
    ) -> impl Iterator<Item = Result<(u64, OwnedEventId)>> + '_ {
        let room = room.to_owned();
        let ordered: Vec<(u64, u64)> = if forward { ranges } else { ranges.into_iter().rev().collect() };
        ordered.into_iter().flat_map(move |(lo, hi)| {
            let start = (room.clone(), Be64(if forward { lo } else { hi })).encode();
            self.db
                .tables
                .rooms
                .roomidpos_eventid
                .scan_from(prefix(&room), start, forward)
                .map(|entry| entry.map(|((_, Be64(pos)), id)| (pos, id)).map_err(Error::from))
                .take_while(move |entry| entry.as_ref().map_or(true, |(pos, _)| (lo..=hi).contains(pos)))
        })
    }

    /// An event in client format pruned by its room version's redaction algorithm (an erased
    /// sender's message, as shown to those who were not there when it was sent).
    pub fn pruned_client_event(&self, event_id: &EventId) -> Result<Option<Value>> {
        let (Some(json), Some(meta)) = (self.pdu_json(event_id)?, self.meta(event_id)?) else { return Ok(None) };
        let record = self.room(&meta.room_id)?.ok_or_else(|| Error::Internal("event of an unknown room".into()))?;
        let rules = super::rules_of(&record.version)?;
        let object: CanonicalJsonObject = serde_json::from_slice(&json).map_err(|e| Error::Internal(e.to_string()))?;
        let pruned = redact(object, &rules.redaction, None).map_err(|e| Error::Internal(e.to_string()))?;
        let bytes = serde_json::to_vec(&pruned).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Some(pdu::client_event(&event_id.to_owned(), &meta.room_id, &bytes, None)))
    }

    /// Builds the visibility indexes from the stored events when a database predates them; a
    /// no-op afterwards. Runs before the server answers anything.
    pub fn index_visibility_history(&self) -> Result<()> {
        const DONE: &str = "visibility_index_v1";
        let tables = &self.db.tables;
        if tables.meta.get(&DONE.to_owned())?.is_some() {
            return Ok(());
        }
        let mut batch = crate::db::Batch::new();
        let mut indexed = 0u64;
        for entry in tables.rooms.pos_eventid.iter() {
            let (Be64(pos), event_id) = entry?;
            let Some(pdu) = self.pdu(&event_id)? else { continue };
            let Some(room) = pdu.room_id.clone().or_else(|| self.meta(&event_id).ok().flatten().map(|m| m.room_id))
            else {
                continue;
            };
            if let Some(change) = VisibilityChange::of(&pdu) {
                change.write(tables, &mut batch, &room, pos);
                indexed += 1;
            }
        }
        tables.meta.insert(&mut batch, &DONE.to_owned(), &Be64(1));
        self.db.commit(batch)?;
        if indexed > 0 {
            tracing::info!(indexed, "indexed the membership and visibility history of stored rooms");
        }
        Ok(())
    }
}

/// What an event changes of the visibility indexes.
pub(crate) enum VisibilityChange {
    Membership(OwnedUserId, String),
    Visibility(HistoryVisibility),
}

impl VisibilityChange {
    pub(crate) fn of(pdu: &pdu::Pdu) -> Option<Self> {
        let key = pdu.state_key.as_deref()?;
        let kind = pdu.kind.to_string();
        let content: Value = serde_json::from_str(pdu.content.get()).unwrap_or_default();
        if kind == StateEventType::RoomMember.to_string() {
            let user = UserId::parse(key).ok()?;
            Some(Self::Membership(user, content["membership"].as_str().unwrap_or("leave").to_owned()))
        } else if kind == StateEventType::RoomHistoryVisibility.to_string() && key.is_empty() {
            Some(Self::Visibility(HistoryVisibility::of_content(&content)))
        } else {
            None
        }
    }

    pub(crate) fn write(
        &self,
        tables: &crate::db::tables::Tables,
        batch: &mut crate::db::Batch,
        room: &RoomId,
        pos: u64,
    ) {
        match self {
            Self::Membership(user, membership) => tables.rooms.roomiduserpos_membership.insert(
                batch,
                &(room.to_owned(), user.clone(), Be64(pos)),
                &membership.clone(),
            ),
            Self::Visibility(value) => tables.rooms.roomidpos_visibility.insert(
                batch,
                &(room.to_owned(), Be64(pos)),
                &value.as_str().to_owned(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{HistoryVisibility as V, Membership as M, Window};

    /// Every position 1..=20 the window lets the reader see.
    fn seen(window: &Window) -> Vec<u64> {
        (1..=20).filter(|p| window.may_see(*p)).collect()
    }

    fn check_consistent(window: &Window) {
        for pos in 0..=25 {
            assert_eq!(window.may_see(pos), window.decide(pos), "ranges and the rule agree at {pos}");
        }
    }

    #[test]
    fn joined_reads_from_join_on() {
        let w = Window::new(vec![(10, M::Join)], vec![(4, V::Joined)]);
        check_consistent(&w);
        // 1..=3 came before the setting (the default `shared`), so a later member sees them, and
        // the setting itself, since the visibility before it allowed it.
        assert_eq!(seen(&w), [1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
        assert!(!w.may_see(5) && !w.may_see(9));
    }

    #[test]
    fn joined_before_setting_sees_the_change() {
        let w = Window::new(vec![(2, M::Join)], vec![(4, V::Joined)]);
        assert_eq!(seen(&w), (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn shared_reads_everything_before_the_join_up_to_the_leave() {
        let w = Window::new(vec![(10, M::Join), (15, M::Leave)], vec![(4, V::Shared)]);
        check_consistent(&w);
        assert_eq!(seen(&w), (1..=15).collect::<Vec<_>>());
        assert_eq!(w.departure(), Some(15));
    }

    #[test]
    fn invited_reads_from_the_invite() {
        let w = Window::new(vec![(8, M::Invite), (12, M::Join)], vec![(4, V::Invited)]);
        check_consistent(&w);
        assert_eq!(seen(&w), [1, 2, 3, 4, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
        let only_invited = Window::new(vec![(8, M::Invite)], vec![(4, V::Invited)]);
        assert!(only_invited.may_see(9) && !only_invited.may_see(7));
        let joined_room = Window::new(vec![(8, M::Invite)], vec![(4, V::Joined)]);
        assert_eq!(seen(&joined_room), [8], "an invitee of a joined-only room sees only their invite");
    }

    #[test]
    fn never_joined_sees_only_their_own_membership() {
        for path in [vec![(8, M::Knock), (9, M::Leave)], vec![(8, M::Invite), (9, M::Leave)], vec![(8, M::Ban)]] {
            let w = Window::new(path.clone(), vec![(4, V::Shared)]);
            check_consistent(&w);
            let own: Vec<u64> = path.iter().map(|(p, _)| *p).collect();
            assert_eq!(seen(&w), own, "{path:?}");
            assert!(w.departure().is_none());
        }
    }

    #[test]
    fn kicked_and_banned_read_up_to_their_removal() {
        let w = Window::new(vec![(5, M::Join), (9, M::Leave), (12, M::Join), (14, M::Ban)], vec![(4, V::Joined)]);
        check_consistent(&w);
        assert_eq!(seen(&w), [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14]);
        assert_eq!(w.departure(), Some(14));
    }

    #[test]
    fn visibility_changed_mid_history() {
        // shared until 6, joined from 6 to 12, world_readable from 12 on.
        let w = Window::new(vec![(9, M::Join), (16, M::Leave)], vec![(6, V::Joined), (12, V::WorldReadable)]);
        check_consistent(&w);
        // 6 is the change itself: shared before it, so visible; 7 and 8 are joined-only before the join.
        assert_eq!(seen(&w), (1..=6).chain(9..=20).collect::<Vec<_>>());
        assert!(Window::new(vec![], vec![(3, V::WorldReadable)]).may_see(5));
        assert!(!Window::new(vec![], vec![(3, V::WorldReadable), (6, V::Shared)]).may_see(7));
    }

    #[test]
    fn servers_see_shared_history_and_what_their_users_saw() {
        use super::ServerWindow;
        // A room `joined` from 4; the server's user joined at 10 and left at 15.
        let server = ServerWindow::new(vec![vec![(10, M::Join), (15, M::Leave)]], vec![(4, V::Joined)]);
        let seen: Vec<u64> = (1..=20).filter(|p| server.may_see(*p)).collect();
        assert_eq!(seen, [1, 2, 3, 4, 10, 11, 12, 13, 14, 15]);
        // Shared history is for any server in the room; `invited` needs an invited user then.
        let shared = ServerWindow::new(vec![], vec![(4, V::Shared)]);
        assert!(shared.may_see(9));
        let invited = ServerWindow::new(vec![vec![(8, M::Invite)]], vec![(4, V::Invited)]);
        assert!(invited.may_see(9) && !invited.may_see(7));
        let nobody = ServerWindow::new(vec![], vec![(4, V::Joined)]);
        assert!(!nobody.may_see(9));
    }

    #[test]
    fn unknown_values_are_strict() {
        assert_eq!(V::parse("everyone"), V::Joined);
        let w = Window::new(vec![(10, M::Join)], vec![(4, V::parse("nonsense"))]);
        assert!(!w.may_see(5));
    }
}
