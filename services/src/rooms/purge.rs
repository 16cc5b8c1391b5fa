//! Purging a room from this server's store (the admin API's room deletion with `purge`): its
//! events, state snapshots, memberships, receipts, relations, notification counts and the room
//! account data of its members go, in one batch, so a crash leaves either the room or nothing.
//! The room must have no local member left (a shutdown makes them leave first). Events other
//! servers hold are theirs: purging only forgets our copy.

use std::collections::BTreeSet;

use ruma::{OwnedEventId, OwnedUserId, RoomId};
use serde::Serialize;

use super::Rooms;
use crate::{
    db::{
        codec::{prefix, prefix2, Be64, Json},
        Batch,
    },
    error::{Error, Result},
};

/// What a purge removed.
#[derive(Debug, Default, Serialize)]
pub struct Purged {
    pub events: usize,
    pub snapshots: usize,
    pub members: usize,
}

impl Rooms {
    /// Removes every trace of the room from the store; refused while a local user is joined,
    /// invited or knocking.
    pub async fn purge(&self, room: &RoomId) -> Result<Purged> {
        let lock = self.lock(room);
        let _guard = lock.lock().await;
        let tables = &self.db.tables;
        let room_key = room.to_owned();
        let mut members: Vec<OwnedUserId> = Vec::new();
        for entry in tables.rooms.roomiduserid_membership.scan_prefix(prefix(&room_key)) {
            let ((_, user), Json(m)) = entry?;
            if self.is_local(&user) && matches!(m.membership.as_str(), "join" | "invite" | "knock") {
                return Err(Error::BadState(format!("{user} is still in the room: shut it down first")));
            }
            members.push(user);
        }
        let mut batch = Batch::new();
        let mut purged = Purged { members: members.len(), ..Default::default() };
        let mut snapshots = BTreeSet::new();
        if let Some(record) = self.room(room)? {
            snapshots.insert(record.snapshot);
        }
        let mut events: Vec<OwnedEventId> = Vec::new();
        for entry in tables.rooms.roomidpos_eventid.scan_prefix(prefix(&room_key)) {
            let ((_, Be64(pos)), event_id) = entry?;
            if let Some(Json(meta)) = tables.rooms.eventid_meta.get(&event_id)? {
                snapshots.insert(meta.snapshot);
                snapshots.extend(meta.state_after);
            }
            tables.rooms.pos_eventid.remove(&mut batch, &Be64(pos));
            tables.rooms.roomidpos_eventid.remove(&mut batch, &(room_key.clone(), Be64(pos)));
            events.push(event_id);
        }
        for event_id in &events {
            tables.rooms.eventid_pdu.remove(&mut batch, event_id);
            tables.rooms.eventid_meta.remove(&mut batch, event_id);
            tables.rooms.eventid_outlier.remove(&mut batch, event_id);
            for entry in tables.rooms.parentpos_childeventid.scan_prefix(prefix(event_id)) {
                let (key, _) = entry?;
                tables.rooms.parentpos_childeventid.remove(&mut batch, &key);
            }
        }
        self.forget_recent(&events);
        purged.events = events.len();
        // Snapshots are deltas on their parents, all of this room: follow every chain.
        let mut pending: Vec<u64> = snapshots.iter().copied().collect();
        while let Some(id) = pending.pop() {
            if let Some(Json(snapshot)) = tables.rooms.snapshotid_snapshot.get(&Be64(id))? {
                if let Some(parent) = snapshot.parent.filter(|p| snapshots.insert(*p)) {
                    pending.push(parent);
                }
            }
        }
        for id in &snapshots {
            tables.rooms.snapshotid_snapshot.remove(&mut batch, &Be64(*id));
        }
        purged.snapshots = snapshots.len();
        macro_rules! clear_prefix {
            ($table:expr, $prefix:expr) => {
                for entry in $table.scan_prefix($prefix) {
                    let (key, _) = entry?;
                    $table.remove(&mut batch, &key);
                }
            };
        }
        clear_prefix!(tables.rooms.roomiduserid_membership, prefix(&room_key));
        clear_prefix!(tables.rooms.roomiduserpos_membership, prefix(&room_key));
        clear_prefix!(tables.rooms.roomidpos_visibility, prefix(&room_key));
        clear_prefix!(tables.ephemeral.roomidpos_receipt, prefix(&room_key));
        clear_prefix!(tables.ephemeral.roomidslot_receiptpos, prefix(&room_key));
        clear_prefix!(tables.rooms.roomidpos_threadroot, prefix(&room_key));
        for user in members.iter().filter(|u| self.is_local(u)) {
            tables.rooms.useridroomid_membership.remove(&mut batch, &(user.clone(), room_key.clone()));
            tables.push.useridroomid_notifytotal.remove(&mut batch, &(user.clone(), room_key.clone()));
            tables.push.useridroomid_mainnotifytotal.remove(&mut batch, &(user.clone(), room_key.clone()));
            for entry in tables.push.useridroomidpos_notification.scan_prefix(prefix2(user, &room_key)) {
                let (key, _) = entry?;
                tables.push.useridpos_notification.remove(&mut batch, &(key.0.clone(), key.2));
                tables.push.useridroomidpos_notification.remove(&mut batch, &key);
            }
            clear_prefix!(tables.push.useridroomidthread_notifytotal, prefix2(user, &room_key));
            clear_prefix!(tables.push.useridroomidthreadpos_notifytotal, prefix2(user, &room_key));
            clear_prefix!(tables.push.useridroomidthread_notifyfold, prefix2(user, &room_key));
            clear_prefix!(tables.users.useridroomidtype_accountdata, prefix2(user, &room.to_string()));
        }
        tables.rooms.roomid_published.remove(&mut batch, &room_key);
        tables.rooms.roomid_room.remove(&mut batch, &room_key);
        self.db.commit(batch)?;
        self.records.lock().expect("room records").remove(room);
        self.directory_cache.lock().expect("directory cache").remove(room);
        // Its snapshots are gone: no resolution may name them.
        self.forget_derived_from_state();
        {
            let mut auth = self.auth_cache.lock().expect("auth cache");
            for event_id in &events {
                auth.remove(event_id);
            }
        }
        Ok(purged)
    }
}

impl Rooms {
    /// Deletes the room's timeline events older than stream position `before` (the admin API's
    /// `purge_history`): messages, reactions and the like of other servers, and of ours too with
    /// `delete_local`. State events stay (the room's state and auth chains need them), and so do
    /// the forward extremities. Answers how many events went.
    pub async fn purge_history(&self, room: &RoomId, before: u64, delete_local: bool) -> Result<usize> {
        let lock = self.lock(room);
        let _guard = lock.lock().await;
        let record = self.room(room)?.ok_or_else(|| Error::not_found("Room not found"))?;
        let tables = &self.db.tables;
        let room_key = room.to_owned();
        let mut deleted = 0;
        let mut batch = Batch::new();
        for entry in tables.rooms.roomidpos_eventid.scan_prefix(prefix(&room_key)) {
            let ((_, Be64(pos)), event_id) = entry?;
            if pos >= before {
                break;
            }
            let Some(pdu) = self.pdu(&event_id)? else { continue };
            let local = pdu.sender.server_name() == self.server_name;
            if pdu.is_state() || record.extremities.contains(&event_id) || (local && !delete_local) {
                continue;
            }
            tables.rooms.pos_eventid.remove(&mut batch, &Be64(pos));
            tables.rooms.roomidpos_eventid.remove(&mut batch, &(room_key.clone(), Be64(pos)));
            tables.rooms.roomidpos_threadroot.remove(&mut batch, &(room_key.clone(), Be64(pos)));
            tables.rooms.eventid_pdu.remove(&mut batch, &event_id);
            tables.rooms.eventid_meta.remove(&mut batch, &event_id);
            for child in tables.rooms.parentpos_childeventid.scan_prefix(prefix(&event_id)) {
                let (key, _) = child?;
                tables.rooms.parentpos_childeventid.remove(&mut batch, &key);
            }
            self.auth_cache.lock().expect("auth cache").remove(&event_id);
            self.forget_recent([&event_id]);
            deleted += 1;
            // Bounded batches: a big room's history goes in several commits, each whole.
            if deleted % 1000 == 0 {
                self.db.commit(std::mem::take(&mut batch))?;
            }
        }
        self.db.commit(batch)?;
        Ok(deleted)
    }
}
