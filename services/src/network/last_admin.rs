//! Rooms are never left without an admin: when the last admin of a room leaves, the power levels
//! are changed first, by that admin while they still may (as Tchap's `synapse-manage-last-admin`
//! with `promote_moderators` does). Whom to promote is decided here from the power levels and the
//! memberships alone; `Rooms::leave_as_last_admin` sends the change.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// What the decision reads of a room.
pub struct Room<'a> {
    /// The current `m.room.power_levels` content.
    pub power_levels: &'a Value,
    /// Room version 12 creators (above every level, absent from `users`).
    pub creators: &'a [String],
    /// Users joined to or invited into the room.
    pub present: &'a HashSet<String>,
    /// Users joined to the room.
    pub joined: &'a HashSet<String>,
    /// The room's `im.vector.room.access_rules` content.
    pub access_rules: Option<&'a Value>,
}

fn level(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_f64().map(|f| f as i64))
}

/// The power levels to send before `leaver` leaves, or `None` when the room keeps an admin (or
/// the leaver is none).
pub fn before_leave(leaver: &str, room: &Room<'_>, is_external: &dyn Fn(&str) -> bool) -> Option<Value> {
    let content = room.power_levels.as_object()?;
    let users = content.get("users").and_then(Value::as_object)?;
    let users_default = content.get("users_default").and_then(level).unwrap_or(0);
    let is_creator = |u: &str| room.creators.iter().any(|c| c == u);
    let is_admin = |u: &str| is_creator(u) || users.get(u).and_then(level).is_some_and(|l| l >= 100);
    if !is_admin(leaver) {
        return None;
    }
    let other_admin = room.present.iter().any(|u| u != leaver && is_admin(u));
    if other_admin {
        return None;
    }
    let leaver_level = users.get(leaver).and_then(level).filter(|l| *l >= 100).unwrap_or(100);
    let promote = |users_to_promote: Vec<String>| {
        let mut new = content.clone();
        let list = new.entry("users").or_insert_with(|| Value::Object(Map::new()));
        if let Some(list) = list.as_object_mut() {
            for user in users_to_promote {
                list.insert(user, leaver_level.into());
            }
        }
        Value::Object(new)
    };
    // The moderators (else the members of highest power above the default) still here.
    let mut candidates: Vec<(&String, i64)> =
        users.iter().filter(|(u, _)| u.as_str() != leaver).filter_map(|(u, l)| level(l).map(|l| (u, l))).collect();
    while let Some(top) = candidates.iter().map(|(_, l)| *l).max() {
        if top <= users_default {
            break;
        }
        let holders: Vec<String> = candidates
            .iter()
            .filter(|(u, l)| *l == top && room.present.contains(u.as_str()))
            .map(|(u, _)| (*u).clone())
            .filter(|u| !is_external(u))
            .collect();
        if !holders.is_empty() {
            return Some(promote(holders));
        }
        candidates.retain(|(_, l)| *l != top);
    }
    let rules = room.access_rules;
    let rule = rules.and_then(|r| r.get("rule")).and_then(Value::as_str);
    let public = rules.and_then(|r| r.get("visibility")).and_then(Value::as_str) == Some("public");
    if public || rule == Some("restricted") {
        // A private or public room of agents: everyone becomes an admin.
        let mut new = content.clone();
        new.insert("users_default".into(), 100.into());
        let admins: Map<String, Value> =
            users.iter().filter(|(_, l)| level(l) == Some(100)).map(|(u, l)| (u.clone(), l.clone())).collect();
        new.insert("users".into(), Value::Object(admins));
        return Some(Value::Object(new));
    }
    // A room open to external users (or a direct chat): every member at the default level,
    // external users excepted.
    let mut members: Vec<String> = room
        .joined
        .iter()
        .filter(|u| u.as_str() != leaver && !users.contains_key(u.as_str()) && !is_external(u))
        .cloned()
        .collect();
    members.sort();
    if members.is_empty() {
        return None;
    }
    Some(promote(members))
}
