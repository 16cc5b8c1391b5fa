//! The keys tables and the records they keep. End-to-end encryption keys: device, one-time, fallback and cross-signing keys, signatures, the device list stream and key backups.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One backup version of a user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupVersion {
    pub algorithm: String,
    pub auth_data: Value,
    /// Bumped on every change of the version's keys.
    pub etag: u64,
}

/// A device's fallback key for one algorithm; it stays claimable after use until replaced, but a
/// used one is no longer reported as unused, so the device uploads a fresh one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FallbackKey {
    pub key_id: String,
    pub key: Value,
    pub used: bool,
}

hemicycle_core::tables! {
    /// The keys column families.
    pub struct Tables {
        /// A device's identity keys as the device signed them, plus signatures added later.
        pub userdeviceid_devicekeys: Table<(OwnedUserId, OwnedDeviceId), Json<serde_json::Value>>,
        /// Unclaimed one-time keys: (user, device, `algorithm:key id`) → key.
        pub userdevicekeyid_onetimekey: Table<(OwnedUserId, OwnedDeviceId, String), Json<serde_json::Value>>,
        /// The fallback key of each device and algorithm, handed out when one-time keys run out.
        pub userdevicealgorithm_fallbackkey: Table<(OwnedUserId, OwnedDeviceId, String), Json<FallbackKey>>,
        /// Cross-signing keys: (user, `master` | `self_signing` | `user_signing`) → key.
        pub useridusage_crosssigningkey: Table<(OwnedUserId, String), Json<serde_json::Value>>,
        /// Signatures one user made on another user's key, shown only to the signer:
        /// (signed user, signed key id, signer) → `{ signing key id: signature }`.
        pub targetkeysigner_signatures: Table<(OwnedUserId, String, OwnedUserId), Json<serde_json::Value>>,
        /// The device list stream: position → user whose devices or keys changed.
        pub pos_keychange: Table<Be64, OwnedUserId>,
        /// Key backup versions: (user, version) → algorithm, auth data, etag.
        pub useridversion_backup: Table<(OwnedUserId, String), Json<BackupVersion>>,
        /// Backed-up room keys: (user, version, room, session id) → encrypted session data.
        pub useridversionroomsession_roomkey: Table<(OwnedUserId, String, String, String), Json<serde_json::Value>>,
    }
}
