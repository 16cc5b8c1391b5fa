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
