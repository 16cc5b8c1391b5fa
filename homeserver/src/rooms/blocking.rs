//! Rooms an admin blocked (`PUT /_synapse/admin/v1/rooms/{room}/block`): no user of this server
//! may join, be invited or knock, and no other server may join through us, until unblocked. A
//! room can be blocked before this server knows it (a room id seen in a report, say).

use ruma::RoomId;

use super::Rooms;
use crate::{
    db::Batch,
    error::{Error, Result},
};

impl Rooms {
    /// The admin who blocked the room, if it is blocked.
    pub fn blocked_by(&self, room: &RoomId) -> Result<Option<String>> {
        Ok(self.db.tables.roomid_blocked.get(&room.to_owned())?)
    }

    pub fn set_blocked(&self, room: &RoomId, by: Option<&str>) -> Result<()> {
        let mut batch = Batch::new();
        match by {
            Some(admin) => self.db.tables.roomid_blocked.insert(&mut batch, &room.to_owned(), &admin.to_owned()),
            None => self.db.tables.roomid_blocked.remove(&mut batch, &room.to_owned()),
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

impl Rooms {
    /// Shuts a room down for this server (`DELETE /_synapse/admin/v2/rooms/{room}`): blocks it
    /// when asked, makes every local member leave (an invite is rejected), deletes its local
    /// aliases and takes it out of the room directory; with `forget`, local users forget it too.
    /// Its events stay stored (they are part of other servers' history).
    pub async fn shut_down(&self, room: &RoomId, block_by: Option<&str>, forget: bool) -> Result<Shutdown> {
        if let Some(admin) = block_by {
            self.set_blocked(room, Some(admin))?;
        }
        let mut report = Shutdown::default();
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
        for entry in self.db.tables.alias_roomid.iter() {
            let (alias, crate::db::codec::Json(record)) = entry?;
            if record.room_id == room {
                self.db.tables.alias_roomid.remove(&mut batch, &alias);
                report.local_aliases.push(alias);
            }
        }
        self.db.commit(batch)?;
        self.set_published(room, false)?;
        if forget {
            for user in locals {
                if let Err(error) = self.forget(room, &user) {
                    tracing::warn!(%room, %user, %error, "could not forget the room at shutdown");
                }
            }
        }
        Ok(report)
    }
}
