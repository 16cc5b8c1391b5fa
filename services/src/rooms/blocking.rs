//! Rooms an admin blocked (`PUT /_synapse/admin/v1/rooms/{room}/block`): no user of this server
//! may join, be invited or knock, and no other server may join through us, until unblocked. A
//! room can be blocked before this server knows it (a room id seen in a report, say).

use ruma::{OwnedUserId, RoomId, RoomVersionId};

use super::Rooms;
use crate::{
    db::Batch,
    error::{Error, Result},
};

impl Rooms {
    /// The admin who blocked the room, if it is blocked.
    pub fn blocked_by(&self, room: &RoomId) -> Result<Option<String>> {
        Ok(self.db.tables.rooms.roomid_blocked.get(&room.to_owned())?)
    }

    pub fn set_blocked(&self, room: &RoomId, by: Option<&str>) -> Result<()> {
        let mut batch = Batch::new();
        match by {
            Some(admin) => self.db.tables.rooms.roomid_blocked.insert(&mut batch, &room.to_owned(), &admin.to_owned()),
            None => self.db.tables.rooms.roomid_blocked.remove(&mut batch, &room.to_owned()),
        }
        self.db.commit(batch)?;
        Ok(())
    }

    /// `403 M_FORBIDDEN` for a blocked room.
    pub fn check_not_blocked(&self, room: &RoomId) -> Result<()> {
        match self.blocked_by(room)? {
            Some(_) => Err(Error::forbidden("this room has been blocked on this server")),
            None => Ok(()),
        }
    }
}

/// What shutting a room down did (Synapse's `shutdown_room` fields).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Shutdown {
    pub kicked_users: Vec<String>,
    pub failed_to_kick_users: Vec<String>,
    pub local_aliases: Vec<String>,
    pub new_room_id: Option<String>,
}

/// Where a shut-down room's local members go (Synapse's `new_room_user_id`): a new public room
/// made by `creator`, where they are joined and told why.
pub struct Replacement {
    pub creator: OwnedUserId,
    pub name: String,
    pub message: String,
    pub version: RoomVersionId,
}

impl Rooms {
    /// Makes the replacement room: public, named, where members may read but not speak.
    async fn open_replacement(&self, replacement: &Replacement) -> Result<ruma::OwnedRoomId> {
        let mut power = serde_json::Map::new();
        power.insert("users_default".into(), serde_json::json!(-10));
        let request = super::create::CreateRoom {
            preset: Some(super::create::Preset::PublicChat),
            public: true,
            name: Some(replacement.name.clone()),
            power_level_override: Some(power),
            ..Default::default()
        };
        self.create_room(&replacement.creator, request, &replacement.version).await
    }

    /// Shuts a room down for this server (`DELETE /_synapse/admin/v2/rooms/{room}`): blocks it
    /// when asked, makes every local member leave (an invite is rejected), deletes its local
    /// aliases and takes it out of the room directory; with `purge`, the room is then removed
    /// from the store ([`Rooms::purge`]). With a `replacement`, the members who left are joined to a new room and its aliases move there.
    pub async fn shut_down(
        &self,
        room: &RoomId,
        block_by: Option<&str>,
        purge: bool,
        replacement: Option<&Replacement>,
    ) -> Result<Shutdown> {
        let new_room = match replacement {
            Some(replacement) => Some(self.open_replacement(replacement).await?),
            None => None,
        };
        if let Some(admin) = block_by {
            self.set_blocked(room, Some(admin))?;
        }
        let mut report = Shutdown { new_room_id: new_room.as_ref().map(|r| r.to_string()), ..Default::default() };
        let mut locals = Vec::new();
        for (user, m) in self.members(room)? {
            if !self.is_local(&user) {
                continue;
            }
            locals.push(user.clone());
            if !matches!(m.membership.as_str(), "join" | "invite" | "knock") {
                continue;
            }
            let reason = Some("this room was shut down by the server's admins".to_owned());
            match self.set_membership(room, &user, &user, "leave", reason, serde_json::Map::new()).await {
                Ok(_) => report.kicked_users.push(user.to_string()),
                Err(error) => {
                    tracing::warn!(%room, %user, %error, "could not remove a member at shutdown");
                    report.failed_to_kick_users.push(user.to_string());
                }
            }
        }
        let mut batch = Batch::new();
        for entry in self.db.tables.rooms.alias_roomid.iter() {
            let (alias, crate::db::codec::Json(record)) = entry?;
            if record.room_id == room {
                match &new_room {
                    Some(new_room) => {
                        let mut moved = record.clone();
                        moved.room_id = new_room.clone();
                        self.db.tables.rooms.alias_roomid.insert(&mut batch, &alias, &crate::db::codec::Json(moved));
                    }
                    None => self.db.tables.rooms.alias_roomid.remove(&mut batch, &alias),
                }
                report.local_aliases.push(alias);
            }
        }
        self.db.commit(batch)?;
        self.set_published(room, false)?;
        if let (Some(new_room), Some(replacement)) = (&new_room, replacement) {
            for user in report.kicked_users.iter().filter_map(|u| ruma::UserId::parse(u.as_str()).ok()) {
                if let Err(error) = self.join(new_room, &user, None).await {
                    tracing::warn!(%new_room, %user, %error, "could not move a member to the replacement room");
                }
            }
            let content = serde_json::json!({ "msgtype": "m.text", "body": replacement.message });
            self.append(
                new_room,
                &replacement.creator,
                super::NewEvent::message(ruma::events::TimelineEventType::RoomMessage, content),
                None,
            )
            .await?;
        }
        if purge {
            // Members whose leave failed are still in: the room stays, forgotten by the others.
            if report.failed_to_kick_users.is_empty() {
                self.purge(room).await?;
            } else {
                for user in locals {
                    if let Err(error) = self.forget(room, &user) {
                        tracing::warn!(%room, %user, %error, "could not forget the room at shutdown");
                    }
                }
            }
        }
        Ok(report)
    }
}
