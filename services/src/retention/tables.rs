//! The retention tables: when the stream reached which position, so that a record keyed by a
//! stream position can be told its age, and the client transaction ids by the position of the
//! request that recorded them, so the old ones are found without reading the young. Declared
//! here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing it.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedDeviceId, OwnedUserId};

/// (user, device, transaction id) of a client request.
pub type ClientTxn = (OwnedUserId, OwnedDeviceId, String);

hemicycle_core::tables! {
    /// The retention column families.
    pub struct Tables {
        /// Wall-clock ms → the stream position published then: one entry per pruning run, the
        /// ones no retention needs any more dropped by the next.
        pub timems_streampos: Table<Be64, Be64>,
        /// Stream position of an event sent with a transaction id → that id
        /// (`useriddevicetxn_eventid`), written with the event. Ids recorded before this index
        /// existed are filed under small numbers below every stream position, so they go first.
        pub pos_eventtxn: Table<Be64, Json<ClientTxn>>,
        /// Stream position of a to-device send → its transaction id (`useriddevicetxn_todevice`).
        pub pos_todevicetxn: Table<Be64, Json<ClientTxn>>,
    }
}
