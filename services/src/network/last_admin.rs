//! Rooms are never left without an admin: when the last admin of a room leaves, the power levels
//! are changed first, by that admin while they still may (as Tchap's `synapse-manage-last-admin`
//! with `promote_moderators` does). Whom to promote is decided here from the power levels and the
//! memberships alone; `Rooms::keep_an_admin` sends the change before a leave, and a last admin's
//! own demotion (power levels lowering them) carries the promotion in the same event.

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

/// Whom to promote when the last admin goes.
#[derive(Debug, PartialEq)]
enum Promotion {
    /// These users get the leaving admin's level.
    Users(Vec<String>, i64),
    /// Nobody qualifies in a room of agents: everyone becomes an admin.
    Everyone,
}

/// Whom to promote when `leaver`, an admin with no other admin joined or invited, stops being
/// one; `None` when the room keeps an admin (or the leaver is none). `still_admin` says whether
/// a user other than the leaver is an admin after the change.
fn promotion(
    leaver: &str,
    room: &Room<'_>,
    still_admin: &dyn Fn(&str) -> bool,
    is_external: &dyn Fn(&str) -> bool,
) -> Option<Promotion> {
    let content = room.power_levels.as_object()?;
    let users = content.get("users").and_then(Value::as_object)?;
    let users_default = content.get("users_default").and_then(level).unwrap_or(0);
    let is_creator = |u: &str| room.creators.iter().any(|c| c == u);
    let is_admin = |u: &str| is_creator(u) || users.get(u).and_then(level).is_some_and(|l| l >= 100);
    if !is_admin(leaver) {
        return None;
    }
    if room.present.iter().any(|u| u != leaver && still_admin(u)) {
        return None;
    }
    let leaver_level = users.get(leaver).and_then(level).filter(|l| *l >= 100).unwrap_or(100);
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
            return Some(Promotion::Users(holders, leaver_level));
        }
        candidates.retain(|(_, l)| *l != top);
    }
    let rules = room.access_rules;
    let rule = rules.and_then(|r| r.get("rule")).and_then(Value::as_str);
    let public = rules.and_then(|r| r.get("visibility")).and_then(Value::as_str) == Some("public");
    if public || rule == Some("restricted") {
        return Some(Promotion::Everyone);
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
    Some(Promotion::Users(members, leaver_level))
}

/// `content` with `promotion` applied; `keep` is a user whose entry stays whatever it is (the
/// admin who demoted themselves keeps the level they chose).
fn apply(content: &Map<String, Value>, promotion: Promotion, keep: Option<&str>) -> Value {
    let mut new = content.clone();
    match promotion {
        Promotion::Users(promoted, to) => {
            let list = new.entry("users").or_insert_with(|| Value::Object(Map::new()));
            if let Some(list) = list.as_object_mut() {
                for user in promoted {
                    if list.get(&user).and_then(level).is_none_or(|l| l < to) {
                        list.insert(user, to.into());
                    }
                }
            }
        }
        Promotion::Everyone => {
            new.insert("users_default".into(), 100.into());
            let users = content.get("users").and_then(Value::as_object);
            let admins: Map<String, Value> = users
                .into_iter()
                .flatten()
                .filter(|(u, l)| level(l) == Some(100) || keep == Some(u.as_str()))
                .map(|(u, l)| (u.clone(), l.clone()))
                .collect();
            new.insert("users".into(), Value::Object(admins));
        }
    }
    Value::Object(new)
}

/// The power levels to send before `leaver` leaves, or `None` when the room keeps an admin (or
/// the leaver is none).
pub fn before_leave(leaver: &str, room: &Room<'_>, is_external: &dyn Fn(&str) -> bool) -> Option<Value> {
    let content = room.power_levels.as_object()?;
    let users = content.get("users").and_then(Value::as_object)?;
    let is_admin =
        |u: &str| room.creators.iter().any(|c| c == u) || users.get(u).and_then(level).is_some_and(|l| l >= 100);
    let promotion = promotion(leaver, room, &is_admin, is_external)?;
    Some(apply(content, promotion, None))
}

/// When `sender`, the room's last admin, sends power levels (`new`) that make them no longer
/// one, and nobody else is an admin in `new`: `new` with the others promoted as when the last
/// admin leaves, sent in the same event (the sender may still raise others up to their old
/// level). `None` when the event changes nothing of the kind.
pub fn on_power_levels(
    sender: &str,
    room: &Room<'_>,
    new: &Value,
    is_external: &dyn Fn(&str) -> bool,
) -> Option<Value> {
    let new_content = new.as_object()?;
    let new_users = new_content.get("users").and_then(Value::as_object);
    let new_default = new_content.get("users_default").and_then(level).unwrap_or(0);
    let admin_after = |u: &str| {
        room.creators.iter().any(|c| c == u)
            || new_users.and_then(|list| list.get(u)).and_then(level).unwrap_or(new_default) >= 100
    };
    if admin_after(sender) {
        return None;
    }
    let promotion = promotion(sender, room, &admin_after, is_external)?;
    Some(apply(new_content, promotion, Some(sender)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const GUEST: &str = "@guest:externes.example";

    fn external(user: &str) -> bool {
        user.ends_with(":externes.example")
    }

    fn set(users: &[&str]) -> HashSet<String> {
        users.iter().map(|u| (*u).to_owned()).collect()
    }

    /// A room open to external users whose last admin leaves with no moderator left: the agents
    /// at the default level are promoted, the external user is not.
    #[test]
    fn an_external_member_is_not_promoted_when_everyone_is() {
        let power_levels = json!({ "users": { "@alice:a": 100 }, "users_default": 0 });
        let members = set(&["@alice:a", "@bob:a", GUEST]);
        let rules = json!({ "rule": "unrestricted" });
        let room = Room {
            power_levels: &power_levels,
            creators: &[],
            present: &members,
            joined: &members,
            access_rules: Some(&rules),
        };
        let new = before_leave("@alice:a", &room, &external).expect("a promotion");
        assert_eq!(new["users"], json!({ "@alice:a": 100, "@bob:a": 100 }), "{new}");
        assert_eq!(new["users_default"], 0, "{new}");
    }

    /// The members of highest power are promoted, external users excepted: with the external one
    /// alone at the top, the next level's agents are.
    #[test]
    fn an_external_member_of_highest_power_is_passed_over() {
        let power_levels =
            json!({ "users": { "@alice:a": 100, GUEST: 50, "@carol:a": 40, "@dan:a": 10 }, "users_default": 0 });
        let members = set(&["@alice:a", "@carol:a", "@dan:a", GUEST]);
        let room = Room {
            power_levels: &power_levels,
            creators: &[],
            present: &members,
            joined: &members,
            access_rules: None,
        };
        let new = before_leave("@alice:a", &room, &external).expect("a promotion");
        assert_eq!(new["users"]["@carol:a"], 100, "{new}");
        assert_eq!(new["users"][GUEST], 50, "{new}");
        assert_eq!(new["users"]["@dan:a"], 10, "{new}");
    }
}
