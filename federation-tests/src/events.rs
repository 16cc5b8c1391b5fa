//! Reading what the client API answers: timelines, sync sections, event summaries.

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::*;

/// `/join/{roomIdOrAlias}` with one `server_name` parameter per server.
pub fn join_path(room_or_alias: &str, via: &[String]) -> String {
    let mut path = format!("/_matrix/client/v3/join/{}", enc(room_or_alias));
    for (i, server) in via.iter().enumerate() {
        let _ = write!(path, "{}server_name={}", if i == 0 { '?' } else { '&' }, enc(server));
    }
    path
}

/// What [`Node::wait_timeline_until`] gathered.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// The room's timeline events, in the order the syncs delivered them.
    pub events: Vec<Value>,
    /// The `next_batch` of the last sync: where to wait from next.
    pub next_batch: String,
}

impl Timeline {
    /// The bodies of the `m.room.message` events, in order.
    pub fn bodies(&self) -> Vec<String> {
        bodies(&self.events)
    }

    /// The event ids, in order.
    pub fn event_ids(&self) -> Vec<String> {
        self.events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
    }
}

/// `next_batch` of a sync response.
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"].as_str().unwrap_or_else(|| panic!("no next_batch in {sync}")).to_owned()
}

/// The body of an `m.room.message` event.
pub fn body(event: &Value) -> Option<&str> {
    if event["type"] == "m.room.message" {
        event["content"]["body"].as_str()
    } else {
        None
    }
}

/// The bodies of the `m.room.message` events among `events`, in order.
pub fn bodies(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(body).map(str::to_owned).collect()
}

/// Whether `event` is the `m.room.member` event putting `user` in `membership`.
pub fn is_membership(event: &Value, user: &str, membership: &str) -> bool {
    event["type"] == "m.room.member" && event["state_key"] == user && event["content"]["membership"] == membership
}

/// The ephemeral event of `kind` for `room` in a sync response.
pub fn ephemeral<'a>(sync: &'a Value, room: &str, kind: &str) -> Option<&'a Value> {
    sync["rooms"]["join"][room]["ephemeral"]["events"].as_array()?.iter().find(|e| e["type"] == kind)
}

/// The users an `m.typing` event in this sync response lists for `room` (`None`: no such event).
pub fn typing_users(sync: &Value, room: &str) -> Option<Vec<String>> {
    let typing = ephemeral(sync, room, "m.typing")?;
    Some(typing["content"]["user_ids"].as_array()?.iter().filter_map(|u| u.as_str().map(str::to_owned)).collect())
}

/// A one-line summary of an event for failure messages.
pub fn describe(event: &Value) -> String {
    let mut line = format!(
        "{} {} from {}",
        event["event_id"].as_str().unwrap_or("?"),
        event["type"].as_str().unwrap_or("?"),
        event["sender"].as_str().unwrap_or("?")
    );
    if let Some(key) = event["state_key"].as_str() {
        let _ = write!(line, " [{key}]");
    }
    if let Some(membership) = event["content"]["membership"].as_str() {
        let _ = write!(line, " {membership}");
    }
    if let Some(text) = event["content"]["body"].as_str() {
        let _ = write!(line, " {text:?}");
    }
    if let Some(name) = event["content"]["name"].as_str() {
        let _ = write!(line, " name={name:?}");
    }
    line
}

/// [`describe`] for a list, one line each.
pub fn describe_all(events: &[Value]) -> String {
    events.iter().map(|e| format!("  {}\n", describe(e))).collect()
}

/// A public room created on `a` by the owner of `a_token`, joined (by id, via `a`) by `b_user`
/// from `b`; returns once `a`'s user has seen the join in its sync.
pub async fn shared_room(a: &Node, a_token: &str, b: &Node, b_token: &str, b_user: &str) -> String {
    let room = a.create_room(a_token, json!({ "preset": "public_chat" })).await;
    let since = a.sync_token(a_token).await;
    let joined = b.join(b_token, &room, &[a.server_name()]).await;
    assert_eq!(joined, room, "the join answers the room joined");
    a.wait_for_timeline(a_token, &room, Some(&since), |e| is_membership(e, b_user, "join"), SYNC_WAIT).await;
    room
}

// ---- a tiny PNG encoder, for media tests without an image crate --------------------------------
