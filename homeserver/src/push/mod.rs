//! Push rules: the spec's default rules (ruma's `Ruleset::server_default`) plus each user's
//! changes, stored as the server-managed `m.push_rules` account data, and the unread counts that
//! sync reports, computed by evaluating the rules on the events after the user's read receipt.

use ruma::{
    events::StateEventType,
    push::{Action, NewPushRule, PushConditionPowerLevelsCtx, PushConditionRoomCtx, RuleKind, Ruleset},
    serde::Raw,
    Int, RoomId, UInt, UserId,
};
use serde_json::{json, Value};

use crate::{
    error::{Error, Result},
    services::Services,
};

/// Events looked at, at most, when counting a room's unread notifications.
const COUNT_WINDOW: usize = 500;

pub const ACCOUNT_DATA_TYPE: &str = "m.push_rules";

/// The user's rule set: their stored one, or the spec's defaults.
pub fn ruleset(services: &Services, user: &UserId) -> Result<Ruleset> {
    match services.account_data.get(user, None, ACCOUNT_DATA_TYPE)? {
        Some(stored) => {
            let global = stored.get("global").cloned().unwrap_or(Value::Null);
            serde_json::from_value(global).map_err(|e| Error::Internal(format!("stored push rules unreadable: {e}")))
        }
        None => Ok(Ruleset::server_default(user)),
    }
}

async fn store(services: &Services, user: &UserId, rules: &Ruleset) -> Result<()> {
    let content = json!({ "global": rules });
    services.account_data.set_managed(user, None, ACCOUNT_DATA_TYPE, content).await
}

pub async fn insert(
    services: &Services,
    user: &UserId,
    rule: NewPushRule,
    after: Option<&str>,
    before: Option<&str>,
) -> Result<()> {
    let mut rules = ruleset(services, user)?;
    rules.insert(rule, after, before).map_err(|e| Error::BadJson(format!("cannot add this rule: {e}")))?;
    store(services, user, &rules).await
}

pub async fn remove(services: &Services, user: &UserId, kind: RuleKind, rule_id: &str) -> Result<()> {
    let mut rules = ruleset(services, user)?;
    rules.remove(kind, rule_id).map_err(|e| match e {
        ruma::push::RemovePushRuleError::NotFound => Error::not_found("no such push rule"),
        other => Error::BadJson(other.to_string()),
    })?;
    store(services, user, &rules).await
}

pub async fn set_enabled(
    services: &Services,
    user: &UserId,
    kind: RuleKind,
    rule_id: &str,
    enabled: bool,
) -> Result<()> {
    let mut rules = ruleset(services, user)?;
    rules.set_enabled(kind, rule_id, enabled).map_err(|_| Error::not_found("no such push rule"))?;
    store(services, user, &rules).await
}

pub async fn set_actions(
    services: &Services,
    user: &UserId,
    kind: RuleKind,
    rule_id: &str,
    actions: Vec<Action>,
) -> Result<()> {
    let mut rules = ruleset(services, user)?;
    rules.set_actions(kind, rule_id, actions).map_err(|_| Error::not_found("no such push rule"))?;
    store(services, user, &rules).await
}

/// The room context push conditions are evaluated in.
fn room_context(services: &Services, room: &RoomId, user: &UserId) -> Result<PushConditionRoomCtx> {
    let rooms = &services.rooms;
    let joined = rooms.joined_members(room)?;
    let display_name = joined
        .iter()
        .find(|(u, _)| u == user)
        .and_then(|(_, c)| c.get("displayname").and_then(|d| d.as_str()).map(str::to_owned))
        .unwrap_or_else(|| user.localpart().to_owned());
    let member_count = UInt::new(joined.len() as u64).unwrap_or_default();
    let mut context = PushConditionRoomCtx::new(room.to_owned(), member_count, user.to_owned(), display_name);
    if let Some(levels) = rooms.state_event(room, &StateEventType::RoomPowerLevels, "")? {
        let content: Value = serde_json::from_str(levels.content.get()).unwrap_or_default();
        let users = content["users"]
            .as_object()
            .map(|m| m.iter().filter_map(|(k, v)| Some((k.parse().ok()?, Int::new(v.as_i64()?)?))).collect())
            .unwrap_or_default();
        let users_default = Int::new(content["users_default"].as_i64().unwrap_or(0)).unwrap_or_default();
        let notifications = serde_json::from_value(content["notifications"].clone()).unwrap_or_default();
        let version = rooms.room(room)?.map(|r| r.version);
        if let Some(rules) = version.and_then(|v| v.rules()) {
            let mut creators = Vec::new();
            if let Some(create) = rooms.state_event(room, &StateEventType::RoomCreate, "")? {
                creators.push(create.sender.clone());
                let content: Value = serde_json::from_str(create.content.get()).unwrap_or_default();
                let extra = content["additional_creators"].as_array().cloned().unwrap_or_default();
                creators.extend(extra.iter().filter_map(|u| u.as_str().and_then(|u| u.parse().ok())));
            }
            let level_rules = ruma::room_version_rules::RoomPowerLevelsRules::new(&rules.authorization, creators);
            context.power_levels =
                Some(PushConditionPowerLevelsCtx::new(users, users_default, notifications, level_rules));
        }
    }
    Ok(context)
}

/// The notifying events of a room for the user, newest first: events by others among the
/// latest [`COUNT_WINDOW`] before position `before` (all when `None`) whose actions notify, with
/// their position and actions; scanning stops at position `stop_at`.
async fn notifying_events(
    services: &Services,
    rules: &Ruleset,
    room: &RoomId,
    user: &UserId,
    before: Option<u64>,
    stop_at: u64,
    window: usize,
) -> Result<Vec<(u64, Value, Vec<Action>)>> {
    let context = room_context(services, room, user)?;
    // Only events sent while the user is a member notify (as a server that evaluates push rules
    // when an event arrives would): history from before the join, visible or not, does not.
    let reader = services.rooms.reader(user, room)?;
    let Some(joined_since) = reader.joined_since() else { return Ok(Vec::new()) };
    let Some(hi) = before.unwrap_or(u64::MAX).checked_sub(1) else { return Ok(Vec::new()) };
    let floor = stop_at.max(joined_since).saturating_add(1);
    let recent: Vec<(u64, ruma::OwnedEventId)> =
        reader.timeline(floor, hi, false).take(window).collect::<Result<_>>()?;
    let mut out = Vec::new();
    for (pos, event_id) in recent {
        let Some(event) = reader.event(pos, &event_id)? else { continue };
        if event["sender"].as_str() == Some(user.as_str()) {
            continue;
        }
        let raw: Raw<Value> =
            Raw::from_json(serde_json::value::to_raw_value(&event).map_err(|e| Error::Internal(e.to_string()))?);
        let actions = rules.get_actions(&raw, &context).await;
        if actions.iter().any(Action::should_notify) {
            out.push((pos, event, actions.to_vec()));
        }
    }
    Ok(out)
}

/// (notification count, highlight count) of a room for the user: notifying events after the
/// user's latest read receipt.
pub async fn unread_counts(services: &Services, room: &RoomId, user: &UserId) -> Result<(u64, u64)> {
    let read_pos = services.receipts.read_position(room, user)?.unwrap_or(0);
    let rules = ruleset(services, user)?;
    let events = notifying_events(services, &rules, room, user, None, read_pos, COUNT_WINDOW).await?;
    let highlight = events.iter().filter(|(_, _, actions)| actions.iter().any(Action::is_highlight)).count();
    Ok((events.len() as u64, highlight as u64))
}

/// A notification as `/notifications` lists it.
pub struct Notified {
    pub room_id: ruma::OwnedRoomId,
    pub pos: u64,
    pub event: Value,
    pub actions: Vec<Action>,
    pub read: bool,
}

/// The user's notifications across their joined rooms, newest first, before position `before`.
pub async fn notifications(
    services: &Services,
    user: &UserId,
    before: Option<u64>,
    limit: usize,
    only_highlight: bool,
) -> Result<Vec<Notified>> {
    let rules = ruleset(services, user)?;
    // Each room's newest notifications are all a page can hold: look at a few times the page
    // size per room, not the whole counting window of every room.
    let window = limit.saturating_mul(4).clamp(50, COUNT_WINDOW);
    let mut out = Vec::new();
    for room in services.rooms.rooms_of(user, "join")? {
        let read_pos = services.receipts.read_position(&room, user)?.unwrap_or(0);
        for (pos, event, actions) in notifying_events(services, &rules, &room, user, before, 0, window).await? {
            if !only_highlight || actions.iter().any(Action::is_highlight) {
                out.push(Notified { room_id: room.clone(), pos, event, actions, read: pos <= read_pos });
            }
        }
    }
    out.sort_by_key(|n| std::cmp::Reverse(n.pos));
    out.truncate(limit);
    Ok(out)
}
