//! The ephemeral tables and the records they keep. Read receipts, to-device inboxes and presence.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceRecord {
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ts: u64,
    pub pos: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub user: OwnedUserId,
    pub receipt_type: String,
    pub event_id: OwnedEventId,
    pub thread_id: Option<String>,
    pub ts: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToDeviceMessage {
    pub sender: OwnedUserId,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: Value,
}

hemicycle_core::tables! {
    /// The ephemeral column families.
    pub struct Tables {
        /// (room, stream position) → a read receipt; one live entry per user, type and thread.
        pub roomidpos_receipt: Table<(OwnedRoomId, Be64), Json<Receipt>>,
        /// (room, user/type/thread slot) → position of that slot's current receipt.
        pub roomidslot_receiptpos: Table<(OwnedRoomId, String), Be64>,
        /// A device's to-device inbox: (user, device, stream position) → message.
        pub useriddevicepos_todevice: Table<(OwnedUserId, OwnedDeviceId, Be64), Json<ToDeviceMessage>>,
        /// (sender, sender device, txn id) of to-device sends already done.
        pub useriddevicetxn_todevice: Table<(OwnedUserId, OwnedDeviceId, String), Vec<u8>>,
        /// User → presence, and the stream position of each user's latest change.
        pub userid_presence: Table<OwnedUserId, Json<PresenceRecord>>,
        pub pos_presence: Table<Be64, OwnedUserId>,
    }
}
