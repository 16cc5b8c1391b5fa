//! The admins' audit log: every change an admin makes through the admin API (and the console)
//! is recorded with who, what, on what and when, in the same database as the change, and listed
//! by `GET /_synapse/admin/v1/audit`. Entries are only ever appended.

pub mod tables;

use std::sync::Arc;

pub use self::tables::AuditEntry;
use crate::{
    db::{
        codec::{Be64, Json},
        Batch, Database,
    },
    error::{Error, Result},
    time::now_ms,
};

pub struct Audit {
    db: Arc<Database>,
}

impl Audit {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Appends an entry (durably: the change it records is already made).
    pub fn record(&self, admin: &str, action: &str, target: &str, details: serde_json::Value) -> Result<()> {
        let mut batch = Batch::new();
        let id = self.db.next_count(&mut batch);
        let entry = AuditEntry {
            ts: now_ms(),
            admin: admin.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            details,
        };
        self.db.tables.audit.auditid_entry.insert(&mut batch, &Be64(id), &Json(entry));
        self.db.commit(batch)?;
        tracing::info!(%admin, %action, %target, "admin action");
        Ok(())
    }

    /// Entries, newest first: `(id, entry)`.
    pub fn list(&self) -> Result<Vec<(u64, AuditEntry)>> {
        let mut all: Vec<(u64, AuditEntry)> = self
            .db
            .tables
            .audit
            .auditid_entry
            .iter()
            .map(|entry| entry.map(|(Be64(id), Json(e))| (id, e)).map_err(Error::from))
            .collect::<Result<_>>()?;
        all.reverse();
        Ok(all)
    }
}
