//! The rtc tables and the records they keep. The delayed leave events handed to the built-in
//! LiveKit authorisation service. Declared here, below every service of the domain, so that the
//! store's set of tables (`crate::db::Tables`) can name them without importing the domain's
//! services.

use hemicycle_core::db::{codec::Json, Table};
use serde::{Deserialize, Serialize};

/// A delayed leave event handed over by a participant of a call: kept pending while the
/// participant is on the SFU, sent when it leaves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DelegatedLeave {
    /// Tells this delegation from a later one of the same participant, which replaces it.
    pub id: String,
    /// The server of the delayed event (the participant's): ours, or one reached through its
    /// client API.
    pub server: String,
    pub delay_id: String,
    /// The event's delay, as the client gave it (ms).
    pub timeout_ms: u64,
    /// When the event was last restarted (ms since the epoch), or handed over: past this plus
    /// `timeout_ms` it has fired on its server, and there is nothing left to keep.
    pub restarted_ts: u64,
}

hemicycle_core::tables! {
    /// The rtc column families.
    pub struct Tables {
        /// (LiveKit room, LiveKit identity) → the participant's delayed leave.
        pub roomidentity_delegatedleave: Table<(String, String), Json<DelegatedLeave>>,
    }
}
