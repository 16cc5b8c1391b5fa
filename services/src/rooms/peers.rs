//! Our events as other servers get them: signed.
//!
//! An event of a room no other server is in is stored without our signature (see
//! [`Rooms::build`]); whatever hands a stored event to another server — the federation
//! sender, `/event`, `/state`, `/backfill`, a join's state and auth chain, an invite's room
//! state — reads it through [`Rooms::pdu_json_for_peers`], which signs it on the way out.

use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, RoomId, UserId};
use serde::Deserialize;

use super::{rules_of, NewEvent, Rooms};
use crate::{
    db::codec::{prefix, Json},
    error::{Error, Result},
};

impl Rooms {
    /// A stored event as another server gets it: with our signature when it is one of our
    /// users' events stored unsigned. Every other event was stored with its signatures, checked
    /// on arrival (ours among them, for an event of our users another server sent back), so
    /// nothing but what this server built is ever signed here.
    ///
    /// The signatures made are kept (`signed_out`, bounded): a server in a room may ask for its
    /// state or history again and again, and a signature costs far more than serving the event.
    /// An event's signature covers its redacted form, so it holds for the event redacted since.
    pub fn pdu_json_for_peers(&self, event: &EventId) -> Result<Option<Vec<u8>>> {
        match self.pdu_json(event)? {
            Some(json) => self.for_peers(event, json).map(Some),
            None => Ok(None),
        }
    }

    /// [`Rooms::pdu_json_for_peers`] of an event already read (`json`, as stored).
    pub fn for_peers(&self, event: &EventId, json: Vec<u8>) -> Result<Vec<u8>> {
        /// Whether the event has signatures, read without building it.
        #[derive(Deserialize)]
        struct Signed {
            signatures: Option<serde::de::IgnoredAny>,
        }
        let probe: Signed = serde_json::from_slice(&json)
            .map_err(|e| Error::Internal(format!("stored event {event} unreadable: {e}")))?;
        if probe.signatures.is_some() {
            return Ok(json);
        }
        let mut object: CanonicalJsonObject = serde_json::from_slice(&json)
            .map_err(|e| Error::Internal(format!("stored event {event} unreadable: {e}")))?;
        let ours = match object.get("sender") {
            Some(CanonicalJsonValue::String(sender)) => {
                <&UserId>::try_from(sender.as_str()).is_ok_and(|s| s.server_name() == self.server_name)
            }
            _ => false,
        };
        if !ours {
            // Not ours to sign: the other server refuses it, as it should.
            return Ok(json);
        }
        let kept = self.signed_out.lock().expect("signatures made").get(event).cloned();
        if let Some(signatures) = kept {
            object.insert("signatures".into(), signatures);
            return serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()));
        }
        let room = match self.meta(event)? {
            Some(meta) => meta.room_id,
            None => self
                .outlier(event)?
                .map(|o| o.room_id)
                .ok_or_else(|| Error::Internal(format!("{event} has no room")))?,
        };
        let version = self.room(&room)?.ok_or_else(|| Error::Internal(format!("unknown room {room}")))?.version;
        let rules = rules_of(&version)?;
        let signed = super::signing::signed_bytes(&object, &rules).map_err(Error::Internal)?;
        super::signing::sign(self.server_name.as_str(), self.keys.signer(), &mut object, &signed);
        if let Some(signatures) = object.get("signatures") {
            let mut kept = self.signed_out.lock().expect("signatures made");
            if kept.len() >= super::RECENT_ENTRIES {
                kept.clear();
            }
            kept.insert(event.to_owned(), signatures.clone());
        }
        serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()))
    }

    /// Whether a local event about to be built in `room` (whose current state is `snapshot`)
    /// goes to another server at once, and is therefore signed as it is built rather than on the
    /// way out: the room has members of another server joined, or the event is the membership
    /// of another server's user. Only a shortcut — an event built unsigned is signed when it
    /// leaves — so the answer may lag a membership still being written.
    pub(super) fn leaves_at_once(&self, room: &RoomId, snapshot: u64, event: &NewEvent) -> Result<bool> {
        if event.kind == ruma::events::TimelineEventType::RoomMember {
            let target = event.state_key.as_deref().and_then(|k| <&UserId>::try_from(k).ok());
            if target.is_some_and(|t| t.server_name() != self.server_name) {
                return Ok(true);
            }
        }
        if let Some((at, federated)) = self.federated.lock().expect("federated rooms").get(room) {
            if *at == snapshot {
                return Ok(*federated);
            }
        }
        let tables = &self.db.tables.rooms;
        // The membership table is written in the batch that makes a snapshot durable: the answer
        // is kept only when that snapshot is `snapshot`.
        let durable = tables.roomid_room.get(&room.to_owned())?.is_some_and(|Json(r)| r.snapshot == snapshot);
        let mut federated = false;
        for entry in tables.roomiduserid_membership.scan_prefix(prefix(&room.to_owned())) {
            let ((_, user), Json(record)) = entry?;
            if record.membership == "join" && user.server_name() != self.server_name {
                federated = true;
                break;
            }
        }
        if durable {
            let mut cache = self.federated.lock().expect("federated rooms");
            if cache.len() >= super::RECENT_ENTRIES {
                cache.clear();
            }
            cache.insert(room.to_owned(), (snapshot, federated));
        }
        Ok(federated)
    }
}
