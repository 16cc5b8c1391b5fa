//! The keys tables and the records they keep. End-to-end encryption keys: device, one-time, fallback and cross-signing keys, signatures, the device list stream and key backups.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{prefix2, Be64, Json},
    Batch, DbError, Table,
};
use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
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

impl Tables {
    /// Removes a device's keys into `batch` (the device is being deleted, by the users domain,
    /// in the same write as the device itself).
    pub fn remove_device_into(&self, batch: &mut Batch, user: &UserId, device: &DeviceId) -> Result<(), DbError> {
        let key = (user.to_owned(), device.to_owned());
        let prefix = || prefix2(&user.to_owned(), &device.to_owned());
        self.userdeviceid_devicekeys.remove(batch, &key);
        for entry in self.userdevicekeyid_onetimekey.scan_prefix(prefix()) {
            self.userdevicekeyid_onetimekey.remove(batch, &entry?.0);
        }
        for entry in self.userdevicealgorithm_fallbackkey.scan_prefix(prefix()) {
            self.userdevicealgorithm_fallbackkey.remove(batch, &entry?.0);
        }
        Ok(())
    }

    /// Records that `user`'s device list changed (a device was deleted), in `batch` at `pos`.
    pub fn record_change_into(&self, batch: &mut Batch, pos: u64, user: &UserId) {
        self.pos_keychange.insert(batch, &Be64(pos), &user.to_owned());
    }
}
