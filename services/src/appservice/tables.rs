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

/// A transaction on its way to an appservice, kept from before its first attempt until the
/// appservice accepts it: every attempt, before and after a restart, carries the same id and the
/// same body, so the appservice's dedupe by id is all it needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Transaction {
    pub txn_id: String,
    /// The stream position it covers up to (events, device list changes, key count changes):
    /// the appservice's position once it is accepted.
    pub end: u64,
    /// Serialized once, when built: stored and sent as it is (a record of an earlier release,
    /// which held it as a JSON value, reads the same).
    pub body: Box<serde_json::value::RawValue>,
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

#[cfg(test)]
mod tests {
    use hemicycle_core::db::codec::{Codec, Json};

    /// A transaction in flight stored by an earlier release (its body a JSON value) is read
    /// back with the same body, and sent as it was.
    #[test]
    fn a_transaction_stored_by_an_earlier_release_reads_the_same() {
        let stored = r#"{"txn_id":"5-9","end":9,"body":{"events":[{"type":"m.room.message","content":{"body":"é"}}]}}"#;
        let Json(txn) = Json::<super::Transaction>::decode(stored.as_bytes()).expect("decoded");
        assert_eq!((txn.txn_id.as_str(), txn.end), ("5-9", 9));
        assert_eq!(txn.body.get(), r#"{"events":[{"type":"m.room.message","content":{"body":"é"}}]}"#);
        assert_eq!(Json(txn).encode(), stored.as_bytes(), "written back byte for byte");
    }
}
