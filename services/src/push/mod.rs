//! Push rules: the spec's default rules (ruma's `Ruleset::server_default`) plus each user's
//! changes, stored as the server-managed `m.push_rules` account data. They are evaluated once
//! per event and member as events enter the stream (`evaluate`); unread counts and
//! `/notifications` read what that recorded.

pub mod evaluate;
pub mod pushers;
pub mod sender;
pub mod tables;

pub use evaluate::unread_counts;
use tables::NotificationRecord;

use std::collections::HashMap;

use ruma::{
    push::{Action, NewPushRule, RuleKind, Ruleset},
    UserId,
};
use serde_json::{json, Value};

use crate::{
    db::codec::{prefix, prefix2, Be64, Codec},
    error::{Error, Result},
    services::Services,
};

pub const ACCOUNT_DATA_TYPE: &str = "m.push_rules";

/// The user's rule set: their stored one, or the spec's defaults.
pub fn ruleset(services: &Services, user: &UserId) -> Result<Ruleset> {
    Ok(services.push.ruleset(services, user)?.as_ref().clone())
}

fn stored_ruleset(services: &Services, user: &UserId) -> Result<Ruleset> {
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
    services.account_data.set_managed(user, None, ACCOUNT_DATA_TYPE, content).await?;
    services.push.forget_rules(user);
    Ok(())
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

/// A notification as `/notifications` lists it.
pub struct Notified {
    pub room_id: ruma::OwnedRoomId,
    pub pos: u64,
    pub event: Value,
    pub actions: Vec<Action>,
    pub read: bool,
}

/// The user's notifications, newest first, before position `before`: the newest of each room
/// the user was ever notified in (the rooms holding running totals), merged by position. No
/// index by user and position is kept for this: it was one more write per notified member and
/// event, on the path every message takes, for a listing clients rarely ask for.
pub fn notifications(
    services: &Services,
    user: &UserId,
    before: Option<u64>,
    limit: usize,
    only_highlight: bool,
) -> Result<Vec<Notified>> {
    let tables = &services.db.tables;
    let below = before.unwrap_or(u64::MAX).saturating_sub(1);
    let owner = user.to_owned();
    let mut rooms = Vec::new();
    for entry in tables.push.useridroomid_notifytotal.scan_prefix(prefix(&owner)) {
        let ((_, room), _) = entry?;
        rooms.push(room);
    }
    let mut scans: Vec<_> = rooms
        .iter()
        .map(|room| {
            let start = (owner.clone(), room.clone(), Be64(below)).encode();
            tables.push.useridroomidpos_notification.scan_from(prefix2(&owner, room), start, false)
        })
        .collect();
    // Each room's next notification, and the rooms ordered by its position, newest on top.
    let mut next: Vec<Option<NotificationRecord>> = Vec::with_capacity(scans.len());
    let mut heads = std::collections::BinaryHeap::new();
    for (i, scan) in scans.iter_mut().enumerate() {
        next.push(None);
        if let Some(entry) = scan.next() {
            let ((_, _, Be64(pos)), record) = entry?;
            next[i] = Some(record);
            heads.push((pos, i));
        }
    }
    let mut read_positions: HashMap<usize, u64> = HashMap::new();
    let mut out = Vec::new();
    while out.len() < limit {
        let Some((pos, i)) = heads.pop() else { break };
        let Some(record) = next[i].take() else { continue };
        if let Some(entry) = scans[i].next() {
            let ((_, _, Be64(following)), following_record) = entry?;
            next[i] = Some(following_record);
            heads.push((following, i));
        }
        if only_highlight && !record.actions.iter().any(Action::is_highlight) {
            continue;
        }
        let room = &rooms[i];
        let Some(event_id) = tables.rooms.roomidpos_eventid.get(&(room.clone(), Be64(pos)))? else { continue };
        let Some(event) = services.rooms.reader(user, room)?.event(pos, &event_id)? else { continue };
        let read_pos = match read_positions.get(&i) {
            Some(p) => *p,
            None => {
                let p = services.receipts.read_position(room, user)?.unwrap_or(0);
                read_positions.insert(i, p);
                p
            }
        };
        out.push(Notified { room_id: room.clone(), pos, event, actions: record.actions, read: pos <= read_pos });
    }
    Ok(out)
}
