//! Room upgrades: a new room of the requested version inheriting the old room's important state,
//! and an `m.room.tombstone` in the old room pointing to it.

use ruma::{events::StateEventType, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, UserId};
use serde_json::{json, Map, Value};

use super::{NewEvent, Rooms};
use crate::error::{Error, Result};

/// State carried over to the new room (power levels are handled separately).
const INHERITED: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

impl Rooms {
    fn state_content(&self, room: &RoomId, kind: &str) -> Result<Option<Value>> {
        Ok(self
            .state_event(room, &StateEventType::from(kind), "")?
            .and_then(|e| serde_json::from_str::<Value>(e.content.get()).ok()))
    }

    pub async fn upgrade(
        &self,
        old: &RoomId,
        sender: &UserId,
        version: RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId> {
        if !self.is_joined(sender, old)? {
            return Err(Error::forbidden("you are not in this room"));
        }
        if !self.power(old)?.can_send(sender, "m.room.tombstone", true) {
            return Err(Error::forbidden("you may not upgrade this room"));
        }
        let rules = version.rules().ok_or_else(|| Error::UnsupportedRoomVersion(version.to_string()))?;
        let privileged_creators = rules.authorization.explicitly_privilege_room_creators;

        let mut creation: Map<String, Value> = match self.state_content(old, "m.room.create")? {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        for key in ["creator", "room_version", "predecessor", "additional_creators"] {
            creation.remove(key);
        }
        let last_event = self.room(old)?.and_then(|r| r.extremities.first().cloned());
        creation.insert(
            "predecessor".into(),
            if privileged_creators {
                json!({ "room_id": old })
            } else {
                json!({ "room_id": old, "event_id": last_event })
            },
        );
        if privileged_creators && !additional_creators.is_empty() {
            creation.insert("additional_creators".into(), json!(additional_creators));
        }
        let new = self.create(sender, version, creation).await?;
        self.join(&new, sender, None).await?;

        let mut power = self.state_content(old, "m.room.power_levels")?.unwrap_or_else(|| json!({}));
        if !power["users"].is_object() {
            power["users"] = json!({});
        }
        let users = power["users"].as_object_mut().expect("users is an object");
        if privileged_creators {
            users.remove(sender.as_str());
            for creator in &additional_creators {
                users.remove(creator.as_str());
            }
        } else {
            users.insert(sender.to_string(), json!(100));
        }
        self.append(&new, sender, NewEvent::state(StateEventType::RoomPowerLevels, "", power.clone()), None).await?;
        for kind in INHERITED {
            if let Some(content) = self.state_content(old, kind)? {
                self.append(&new, sender, NewEvent::state(StateEventType::from(*kind), "", content), None).await?;
            }
        }
        // The tombstone first: aliases and the directory listing move only once the old room
        // points to the new one, so a failure never leaves them on a room nobody is told about.
        let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new });
        self.append(old, sender, NewEvent::state(StateEventType::RoomTombstone, "", tombstone), None).await?;
        // The canonical alias moves with the room.
        if let Some(alias) =
            self.state_content(old, "m.room.canonical_alias")?.and_then(|c| c["alias"].as_str().map(str::to_owned))
        {
            if let Ok(alias) = RoomAliasId::parse(&alias) {
                if self.resolve_alias(&alias)?.is_some_and(|r| r.room_id == old) {
                    self.move_alias(&alias, &new)?;
                    self.append(
                        &new,
                        sender,
                        NewEvent::state(StateEventType::RoomCanonicalAlias, "", json!({ "alias": alias })),
                        None,
                    )
                    .await?;
                }
            }
        }
        if self.is_published(old)? {
            self.set_published(&new, true)?;
            self.set_published(old, false)?;
        }

        // Stop conversation in the old room: only moderators may speak or invite there.
        let users_default = power["users_default"].as_i64().unwrap_or(0);
        let restricted = (users_default + 1).max(50);
        let mut old_power = self.state_content(old, "m.room.power_levels")?.unwrap_or_else(|| json!({}));
        old_power["events_default"] = json!(restricted);
        old_power["invite"] = json!(restricted);
        self.append(old, sender, NewEvent::state(StateEventType::RoomPowerLevels, "", old_power), None).await?;
        Ok(new)
    }
}
