//! The audit tables and the records they keep. The admins' audit log.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{
    codec::{Be64, Json},
    Table,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts: u64,
    /// The admin's user id.
    pub admin: String,
    /// What was done, e.g. `user.deactivate`, `user.reset_password`, `room.block`.
    pub action: String,
    /// What it was done to: a user id, a room id, a report id.
    pub target: String,
    /// The request's parameters that matter (never a password).
    #[serde(default)]
    pub details: serde_json::Value,
}

hemicycle_core::tables! {
    /// The audit column families.
    pub struct Tables {
        /// The admins' audit log: counter id → who did what to what, and when.
        pub auditid_entry: Table<Be64, Json<AuditEntry>>,
    }
}
