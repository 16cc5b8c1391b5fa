//! The appservice tables: the transaction being delivered to each appservice, and the devices of
//! its users whose key counts changed since its last transaction. Declared here, below every
//! service of the domain, so that the store's set of tables (`crate::db::Tables`) can name them
//! without importing the domain's services. (Where each appservice has delivered up to stays a
//! counter in `meta`, `appservice_pos:<id>`.)

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A transaction on its way to an appservice, kept from before its first attempt until the
/// appservice accepts it: every attempt, before and after a restart, carries the same id and the
/// same body, so the appservice's dedupe by id is all it needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub txn_id: String,
    /// The stream position it covers up to (events, device list changes, key count changes):
    /// the appservice's position once it is accepted.
    pub end: u64,
    pub body: Value,
}

hemicycle_core::tables! {
    /// The appservice column families.
    pub struct Tables {
        /// Appservice id → its transaction in flight.
        pub appserviceid_txn: Table<String, Json<Transaction>>,
        /// (appservice id, stream position) → devices of its users whose one-time keys or
        /// fallback keys changed at that position (MSC3202), written with the keys and dropped
        /// with the transaction that told it their counts.
        pub appserviceidpos_keycounts: Table<(String, Be64), Json<Vec<(OwnedUserId, OwnedDeviceId)>>>,
    }
}
