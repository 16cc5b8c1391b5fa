//! The reports tables and the records they keep. Reports of events, rooms and users.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

/// What a report is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Event { room_id: OwnedRoomId, event_id: OwnedEventId },
    Room { room_id: OwnedRoomId },
    User { user_id: OwnedUserId },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub reporter: OwnedUserId,
    pub subject: Subject,
    pub reason: Option<String>,
    pub received_ts: u64,
}

hemicycle_core::tables! {
    /// The reports column families.
    pub struct Tables {
        /// Reports of events, rooms and users, by a counter id.
        pub reportid_report: Table<Be64, Json<Report>>,
    }
}
