//! Reading a room's power levels, for the checks the server makes itself (redactions, directory
//! and alias changes) on top of the auth rules that ruma's state-res enforces for every event.

use std::collections::BTreeMap;

use ruma::{events::StateEventType, OwnedUserId, RoomId, UserId};
use serde::Deserialize;

use super::Rooms;
use crate::error::Result;

fn int(value: &serde_json::Value) -> Option<i64> {
    value.as_i64().or_else(|| value.as_str().and_then(|s| s.parse().ok()))
}

#[derive(Debug, Clone, Default)]
pub struct Power {
    users: BTreeMap<String, i64>,
    users_default: i64,
    events: BTreeMap<String, i64>,
    events_default: i64,
    state_default: i64,
    pub redact: i64,
    pub invite: i64,
    pub kick: i64,
    /// Room version 12 creators: above every power level.
    creators: Vec<OwnedUserId>,
}

impl Power {
    pub fn of_user(&self, user: &UserId) -> i64 {
        if self.creators.iter().any(|c| c == user) {
            return i64::MAX;
        }
        self.users.get(user.as_str()).copied().unwrap_or(self.users_default)
    }

    pub fn needed_for(&self, kind: &str, state: bool) -> i64 {
        self.events.get(kind).copied().unwrap_or(if state { self.state_default } else { self.events_default })
    }

    pub fn can_send(&self, user: &UserId, kind: &str, state: bool) -> bool {
        self.of_user(user) >= self.needed_for(kind, state)
    }
}

impl Rooms {
    /// The room's effective power levels (the spec's defaults when there is no power levels event).
    pub fn power(&self, room: &RoomId) -> Result<Power> {
        let create = self.state_event(room, &StateEventType::RoomCreate, "")?;
        let version = self.room(room)?.map(|r| r.version);
        let privileged_creators = version
            .as_ref()
            .and_then(|v| v.rules())
            .is_some_and(|r| r.authorization.explicitly_privilege_room_creators);
        let mut creators = Vec::new();
        if let Some(create) = &create {
            #[derive(Deserialize)]
            struct CreateContent {
                #[serde(default)]
                additional_creators: Vec<OwnedUserId>,
            }
            if privileged_creators {
                creators.push(create.sender.clone());
                if let Ok(c) = serde_json::from_str::<CreateContent>(create.content.get()) {
                    creators.extend(c.additional_creators);
                }
            }
        }
        let Some(levels) = self.state_event(room, &StateEventType::RoomPowerLevels, "")? else {
            let mut users = BTreeMap::new();
            if let Some(create) = &create {
                users.insert(create.sender.to_string(), 100);
            }
            return Ok(Power { users, state_default: 0, redact: 50, kick: 50, creators, ..Default::default() });
        };
        let content: serde_json::Value = serde_json::from_str(levels.content.get()).unwrap_or_default();
        let map = |key: &str| -> BTreeMap<String, i64> {
            content
                .get(key)
                .and_then(|v| v.as_object())
                .map(|o| o.iter().filter_map(|(k, v)| int(v).map(|n| (k.clone(), n))).collect())
                .unwrap_or_default()
        };
        let level = |key: &str, default: i64| content.get(key).and_then(int).unwrap_or(default);
        Ok(Power {
            users: map("users"),
            users_default: level("users_default", 0),
            events: map("events"),
            events_default: level("events_default", 0),
            state_default: level("state_default", 50),
            redact: level("redact", 50),
            invite: level("invite", 0),
            kick: level("kick", 50),
            creators,
        })
    }
}
