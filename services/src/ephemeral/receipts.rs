//! Read receipts (`m.read`, `m.read.private`, threaded), persisted on the stream so sync reports
//! them and they survive restarts.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::{json, Value};

pub use super::tables::Receipt;
use crate::{
    db::{
        codec::{prefix, Be64, Codec, Json},
        Database,
    },
    error::Result,
    stream::{wait_durable, Audience, Cleanup, Writer},
};

pub struct Receipts {
    db: Arc<Database>,
    writer: Arc<Writer>,
    /// Per-user: a user's receipt writes replace their previous slots one at a time.
    locks: crate::locks::Striped,
}

/// The slot a receipt occupies: one per user, type and thread.
fn slot(user: &UserId, receipt_type: &str, thread: Option<&str>) -> String {
    format!("{user}\u{1f}{receipt_type}\u{1f}{}", thread.unwrap_or(""))
}

impl Receipts {
    pub fn new(db: Arc<Database>, writer: Arc<Writer>) -> Self {
        Self { db, writer, locks: crate::locks::Striped::new(64) }
    }

    /// Records a receipt, replacing the user's previous one of the same type and thread, unless
    /// the previous one is for a later event (or the same): a receipt never moves back, as in
    /// Synapse. Unread counts and the pruning of read notifications (`retention`) rely on it:
    /// what a receipt has covered stays read.
    pub async fn set(&self, room: &RoomId, receipt: Receipt) -> Result<()> {
        let key = (room.to_owned(), slot(&receipt.user, &receipt.receipt_type, receipt.thread_id.as_deref()));
        // One receipt of a user at a time: the previous slot is read and replaced without another
        // write of the same slot in between (which would leave an orphan entry behind).
        let _guard = self.locks.lock(&receipt.user).await;
        let previous = self.db.tables.ephemeral.roomidslot_receiptpos.get(&key)?;
        let tables = &self.db.tables;
        if let Some(old) = &previous {
            let event_pos = |event: &ruma::EventId| -> Result<Option<u64>> {
                Ok(tables.rooms.eventid_meta.get(&event.to_owned())?.map(|Json(meta)| meta.pos))
            };
            let old_event = tables.ephemeral.roomidpos_receipt.get(&(room.to_owned(), *old))?.map(|Json(r)| r.event_id);
            // An event not (yet) known here, such as a remote receipt's, has no position: it replaces.
            if let (Some(old_pos), Some(new_pos)) =
                (old_event.as_deref().map(event_pos).transpose()?.flatten(), event_pos(&receipt.event_id)?)
            {
                if new_pos <= old_pos {
                    return Ok(());
                }
            }
        }
        let durable = self.writer.submit(&self.db, |batch, pos| {
            self.writer.touch_room(room, pos);
            if let Some(old) = previous {
                tables.ephemeral.roomidpos_receipt.remove(batch, &(room.to_owned(), old));
            }
            tables.ephemeral.roomidpos_receipt.insert(batch, &(room.to_owned(), Be64(pos)), &Json(receipt));
            tables.ephemeral.roomidslot_receiptpos.insert(batch, &key, &Be64(pos));
            Ok(Cleanup { wake: Audience::Room(room.to_owned()), ..Default::default() })
        })?;
        wait_durable(durable).await
    }

    /// The `m.receipt` event content for receipts in the room at positions in `(since, until]`
    /// (from the start when `since` is `None`), as `reader` may see them (others' private receipts
    /// are hidden).
    ///
    /// `until` is the position the sync answers up to: a receipt written but not yet published
    /// (its position above the stream's) belongs to the next sync, whose `since` is this one's
    /// `until` — reading it now too would hand it to the client twice.
    pub fn receipt_content(
        &self,
        room: &RoomId,
        since: Option<u64>,
        until: u64,
        reader: &UserId,
    ) -> Result<Option<Value>> {
        let start = (room.to_owned(), Be64(since.map_or(0, |s| s + 1))).encode();
        let mut content: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>> = BTreeMap::new();
        for entry in self.db.tables.ephemeral.roomidpos_receipt.scan_from(prefix(&room.to_owned()), start, true) {
            let ((_, Be64(pos)), Json(r)) = entry?;
            if pos > until {
                break;
            }
            if r.receipt_type == "m.read.private" && r.user != reader {
                continue;
            }
            let mut info = json!({ "ts": r.ts });
            if let Some(thread) = &r.thread_id {
                info["thread_id"] = json!(thread);
            }
            content
                .entry(r.event_id.to_string())
                .or_default()
                .entry(r.receipt_type)
                .or_default()
                .insert(r.user.to_string(), info);
        }
        if content.is_empty() {
            return Ok(None);
        }
        Ok(Some(json!(content)))
    }

    /// Whether the user moved their own read receipt in the room (unthreaded or main timeline,
    /// public or private) after stream position `since`: their unread counts changed then.
    pub fn own_receipt_after(&self, room: &RoomId, user: &UserId, since: u64) -> Result<bool> {
        for kind in ["m.read", "m.read.private"] {
            for thread in [None, Some("main")] {
                let key = (room.to_owned(), slot(user, kind, thread));
                if self.db.tables.ephemeral.roomidslot_receiptpos.get(&key)?.is_some_and(|Be64(pos)| pos > since) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Stream position of the event the user's latest unthreaded public or private read receipt
    /// points at (it marks every thread read up to there).
    pub fn read_position(&self, room: &RoomId, user: &UserId) -> Result<Option<u64>> {
        self.read_position_in(room, user, None)
    }

    /// Stream position of the event the user's receipt of that thread (`"main"` or a thread
    /// root; `None`: unthreaded) points at.
    pub fn read_position_in(&self, room: &RoomId, user: &UserId, thread: Option<&str>) -> Result<Option<u64>> {
        let mut best = None;
        for kind in ["m.read", "m.read.private"] {
            let Some(Be64(pos)) =
                self.db.tables.ephemeral.roomidslot_receiptpos.get(&(room.to_owned(), slot(user, kind, thread)))?
            else {
                continue;
            };
            if let Some(Json(receipt)) =
                self.db.tables.ephemeral.roomidpos_receipt.get(&(room.to_owned(), Be64(pos)))?
            {
                if let Some(Json(meta)) = self.db.tables.rooms.eventid_meta.get(&receipt.event_id)? {
                    best = best.max(Some(meta.pos));
                }
            }
        }
        Ok(best)
    }

    /// Rooms with receipt changes after `since`.
    pub fn rooms_changed(&self, rooms: &[OwnedRoomId], since: u64) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for room in rooms {
            let start = (room.clone(), Be64(since + 1)).encode();
            if self.db.tables.ephemeral.roomidpos_receipt.scan_from(prefix(room), start, true).next().is_some() {
                out.push(room.clone());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sync answering up to position `p` must leave a receipt written at a later position to the
    /// next sync (whose `since` is `p`): each receipt reaches a client once.
    #[tokio::test]
    async fn receipts_above_the_answered_position_wait_for_the_next_sync() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::open(dir.path()).unwrap());
        let receipts =
            Receipts::new(db.clone(), Arc::new(Writer::start(db.clone(), Arc::new(std::sync::Mutex::new(())))));
        let room = OwnedRoomId::try_from("!room:localhost").unwrap();
        let event = ruma::OwnedEventId::try_from("$event").unwrap();
        let (alice, bob) = (
            ruma::OwnedUserId::try_from("@alice:localhost").unwrap(),
            ruma::OwnedUserId::try_from("@bob:localhost").unwrap(),
        );
        let mut positions = Vec::new();
        for user in [&alice, &bob] {
            let receipt = Receipt {
                user: user.clone(),
                receipt_type: "m.read".into(),
                event_id: event.clone(),
                thread_id: None,
                ts: 1,
            };
            receipts.set(&room, receipt).await.unwrap();
            let key = (room.clone(), slot(user, "m.read", None));
            positions.push(db.tables.ephemeral.roomidslot_receiptpos.get(&key).unwrap().unwrap().0);
        }
        let readers = |content: Option<Value>| -> Vec<String> {
            let content = content.unwrap_or_default();
            content["$event"]["m.read"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
        };
        let first = receipts.receipt_content(&room, None, positions[0], &alice).unwrap();
        assert_eq!(readers(first), vec![alice.to_string()], "bob's receipt is above the answered position");
        let next = receipts.receipt_content(&room, Some(positions[0]), positions[1], &alice).unwrap();
        assert_eq!(readers(next), vec![bob.to_string()], "the next sync gets bob's, and only bob's");
        let all = receipts.receipt_content(&room, None, positions[1], &alice).unwrap();
        assert_eq!(readers(all), vec![alice.to_string(), bob.to_string()]);
    }
}
