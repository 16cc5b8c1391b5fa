//! Every column family of the store, declared in one place.

use std::{collections::BTreeMap, sync::Arc};

use rocksdb::DB;
use ruma::{OwnedDeviceId, OwnedUserId};

use super::{
    codec::{Be64, Json},
    Table,
};
use crate::users::{Account, Device, TokenOwner};

/// Column family names; `Database::open` creates them all.
pub const NAMES: &[&str] = &[
    "metakey_count",
    "serverkeyid_keypair",
    "userid_account",
    "userid_profile",
    "userdeviceid_device",
    "tokenhash_session",
    "useridroomidtype_accountdata",
    "useridfilterid_filter",
];

pub struct Tables {
    /// Named counters (the global stream counter).
    pub meta: Table<String, Be64>,
    /// This server's signing keys: key id (`ed25519:…`) → PKCS#8 document.
    pub serverkeyid_keypair: Table<String, Vec<u8>>,
    pub userid_account: Table<OwnedUserId, Json<Account>>,
    /// Profile fields (`displayname`, `avatar_url`, extended fields) as one JSON object.
    pub userid_profile: Table<OwnedUserId, Json<BTreeMap<String, serde_json::Value>>>,
    pub userdeviceid_device: Table<(OwnedUserId, OwnedDeviceId), Json<Device>>,
    /// sha256(access token) → its user and device; tokens themselves are never stored.
    pub tokenhash_session: Table<Vec<u8>, Json<TokenOwner>>,
    /// (user, room id or "" for global, event type) → content.
    pub useridroomidtype_accountdata: Table<(OwnedUserId, String, String), Json<serde_json::Value>>,
    /// (user, filter id) → filter definition JSON.
    pub useridfilterid_filter: Table<(OwnedUserId, String), Json<serde_json::Value>>,
}

impl Tables {
    pub(super) fn new(db: &Arc<DB>) -> Self {
        Self {
            meta: Table::new(db, "metakey_count"),
            serverkeyid_keypair: Table::new(db, "serverkeyid_keypair"),
            userid_account: Table::new(db, "userid_account"),
            userid_profile: Table::new(db, "userid_profile"),
            userdeviceid_device: Table::new(db, "userdeviceid_device"),
            tokenhash_session: Table::new(db, "tokenhash_session"),
            useridroomidtype_accountdata: Table::new(db, "useridroomidtype_accountdata"),
            useridfilterid_filter: Table::new(db, "useridfilterid_filter"),
        }
    }
}
