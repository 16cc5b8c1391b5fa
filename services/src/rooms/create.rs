//! `createRoom`: the spec's sequence of initial events, each through the one write path.

use ruma::{events::StateEventType, OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomAliasId, RoomVersionId, UserId};
use serde_json::{json, Map, Value};

use super::{NewEvent, Rooms};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// Everything `POST /createRoom` can ask for, already parsed.
#[derive(Debug, Clone, Default)]
pub struct CreateRoom {
    pub preset: Option<Preset>,
    pub public: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias_localpart: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    /// (type, state key, content)
    pub initial_state: Vec<(String, String, Value)>,
    pub version: Option<RoomVersionId>,
    pub creation_content: Map<String, Value>,
    pub power_level_override: Option<Map<String, Value>>,
}

/// Room versions clients may create rooms in (and upgrade to). The services handle every version
/// 1–12, as rooms of any version arrive over federation; clients are offered the current ones.
pub const CREATABLE_VERSIONS: &[RoomVersionId] = &[RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];

impl Rooms {
    pub async fn create_room(
        &self,
        sender: &UserId,
        mut request: CreateRoom,
        default_version: &RoomVersionId,
    ) -> Result<OwnedRoomId> {
        let version = request.version.clone().unwrap_or_else(|| default_version.clone());
        let rules = version.rules().ok_or_else(|| Error::UnsupportedRoomVersion(version.to_string()))?;
        let privileged_creators = rules.authorization.explicitly_privilege_room_creators;
        self.prepare_network_room(sender, &mut request, privileged_creators)?;
        let preset = request.preset.unwrap_or(if request.public { Preset::PublicChat } else { Preset::PrivateChat });

        // Validate everything before the first event, so a bad request leaves no half-made room.
        let alias = match &request.alias_localpart {
            Some(local) => {
                let alias = RoomAliasId::parse(format!("#{local}:{}", self.server_name))
                    .map_err(|e| Error::invalid_param(format!("invalid room_alias_name: {e}")))?;
                let mut claimed = self.alias_lock.lock().expect("alias lock");
                if self.db.tables.rooms.alias_roomid.contains(&alias.to_string())? || claimed.contains(alias.as_str()) {
                    return Err(Error::AliasTakenAtCreation("this room alias is already taken".into()));
                }
                claimed.insert(alias.to_string());
                Some(alias)
            }
            None => None,
        };
        // Whatever happens next, the claim on the alias ends with this request.
        let _claim = AliasClaim { rooms: self, alias: alias.as_ref().map(|a| a.to_string()) };
        for (kind, _, content) in &request.initial_state {
            if !content.is_object() {
                return Err(Error::BadJson(format!("initial_state content of {kind} must be an object")));
            }
            if kind == "m.room.create" || kind == "m.room.member" {
                return Err(Error::BadJson(format!("{kind} cannot be set through initial_state")));
            }
        }
        if let Some(name) = &request.name {
            if name.len() > 255 {
                return Err(Error::invalid_param("room names are at most 255 bytes"));
            }
        }
        for (kind, key, _) in &request.initial_state {
            // The auth rules refuse a state key naming another user; refuse it before the room exists.
            if key.starts_with('@') && key != sender.as_str() {
                return Err(Error::forbidden(format!("{kind} with state key {key} may only be sent by that user")));
            }
        }
        // Users of other servers are invited by the caller through federation once the room exists.
        for invitee in request.invite.iter().filter(|u| self.is_local(u)) {
            if !self.profiles_user_exists(invitee)? {
                return Err(Error::not_found(format!("{invitee} does not exist")));
            }
        }
        if let Some(overrides) = &request.power_level_override {
            for (key, value) in overrides {
                let valid = match key.as_str() {
                    "users" | "events" | "notifications" => {
                        value.as_object().is_some_and(|o| o.values().all(|v| v.is_i64()))
                    }
                    _ => value.is_i64(),
                };
                if !valid {
                    return Err(Error::BadJson(format!("power_level_content_override.{key} has the wrong type")));
                }
            }
        }

        let mut creation = request.creation_content.clone();
        if preset == Preset::TrustedPrivateChat && privileged_creators && !request.invite.is_empty() {
            creation.insert("additional_creators".into(), json!(request.invite));
        }
        let room = self.create(sender, version.clone(), creation).await?;

        let (displayname, avatar_url) = self.profile_of(sender)?;
        let mut member = json!({ "membership": "join" });
        if let Some(d) = displayname {
            member["displayname"] = json!(d);
        }
        if let Some(a) = avatar_url {
            member["avatar_url"] = json!(a);
        }
        self.append(&room, sender, NewEvent::state(StateEventType::RoomMember, sender.as_str(), member), None).await?;

        let mut users = Map::new();
        if !privileged_creators {
            users.insert(sender.to_string(), json!(100));
            if preset == Preset::TrustedPrivateChat {
                for invitee in &request.invite {
                    users.insert(invitee.to_string(), json!(100));
                }
            }
        }
        let tombstone_level = if privileged_creators { 150 } else { 100 };
        let mut power = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50,
                "m.room.power_levels": 100,
                "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50,
                "m.room.avatar": 50,
                "m.room.tombstone": tombstone_level,
                "m.room.server_acl": 100,
                "m.room.encryption": 100,
                // Element Call: every member publishes their own call membership (MatrixRTC).
                "m.call.member": 0,
                "org.matrix.msc3401.call.member": 0,
                "m.rtc.member": 0,
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "notifications": { "room": 50 },
        });
        if let Some(overrides) = &request.power_level_override {
            for (k, v) in overrides {
                power[k] = v.clone();
            }
        }
        self.append(&room, sender, NewEvent::state(StateEventType::RoomPowerLevels, "", power), None).await?;

        if let Some(alias) = &alias {
            self.insert_alias(alias, &room, sender, true)?;
            self.append(
                &room,
                sender,
                NewEvent::state(StateEventType::RoomCanonicalAlias, "", json!({ "alias": alias })),
                None,
            )
            .await?;
        }

        let overridden = |kind: &str| request.initial_state.iter().any(|(k, key, _)| k == kind && key.is_empty());
        let (join_rule, guest_access) = match preset {
            Preset::PublicChat => ("public", "forbidden"),
            _ => ("invite", "can_join"),
        };
        let preset_events = [
            (StateEventType::RoomJoinRules, json!({ "join_rule": join_rule })),
            (StateEventType::RoomHistoryVisibility, json!({ "history_visibility": "shared" })),
            (StateEventType::RoomGuestAccess, json!({ "guest_access": guest_access })),
        ];
        for (kind, content) in preset_events {
            if !overridden(&kind.to_string()) {
                self.append(&room, sender, NewEvent::state(kind, "", content), None).await?;
            }
        }
        for (kind, key, content) in &request.initial_state {
            let is_named = (kind == "m.room.name" && request.name.is_some())
                || (kind == "m.room.topic" && request.topic.is_some());
            if !is_named {
                self.append(&room, sender, NewEvent::state(kind.as_str().into(), key.clone(), content.clone()), None)
                    .await?;
            }
        }
        if let Some(name) = &request.name {
            self.append(&room, sender, NewEvent::state(StateEventType::RoomName, "", json!({ "name": name })), None)
                .await?;
        }
        if let Some(topic) = &request.topic {
            let content = json!({ "topic": topic, "m.topic": { "m.text": [{ "body": topic }] } });
            self.append(&room, sender, NewEvent::state(StateEventType::RoomTopic, "", content), None).await?;
        }
        for invitee in request.invite.iter().filter(|u| self.is_local(u)) {
            let mut extra = Map::new();
            if request.is_direct {
                extra.insert("is_direct".into(), json!(true));
            }
            self.set_membership(&room, sender, invitee, "invite", None, extra).await?;
        }
        if request.public {
            self.set_published(&room, true)?;
        }
        Ok(room)
    }

    /// Maps an alias to a room (fails with `M_ROOM_IN_USE` if taken, or claimed by a room being
    /// created).
    pub fn set_alias(&self, alias: &RoomAliasId, room: &OwnedRoomId, creator: &UserId) -> Result<()> {
        self.insert_alias(alias, room, creator, false)
    }

    fn insert_alias(
        &self,
        alias: &RoomAliasId,
        room: &OwnedRoomId,
        creator: &UserId,
        claimed_by_me: bool,
    ) -> Result<()> {
        if alias.server_name() != self.server_name {
            return Err(Error::invalid_param("aliases can only be created on this server's domain"));
        }
        let key: OwnedRoomAliasId = alias.to_owned();
        let claimed = self.alias_lock.lock().expect("alias lock");
        if self.db.tables.rooms.alias_roomid.contains(&key.to_string())?
            || (!claimed_by_me && claimed.contains(key.as_str()))
        {
            return Err(Error::RoomInUse("this room alias is already taken".into()));
        }
        let mut batch = crate::db::Batch::new();
        self.db.tables.rooms.alias_roomid.insert(
            &mut batch,
            &key.to_string(),
            &crate::db::codec::Json(super::AliasRecord { room_id: room.clone(), creator: creator.to_owned() }),
        );
        self.db.commit(batch)?;
        Ok(())
    }
}

/// A `createRoom`'s claim on its alias, released when the request ends (the alias is in the table
/// by then if the room was made).
struct AliasClaim<'a> {
    rooms: &'a Rooms,
    alias: Option<String>,
}

impl Drop for AliasClaim<'_> {
    fn drop(&mut self) {
        if let Some(alias) = &self.alias {
            self.rooms.alias_lock.lock().expect("alias lock").remove(alias);
        }
    }
}
