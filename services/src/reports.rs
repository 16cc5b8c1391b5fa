//! Reports users make of events, rooms and other users, kept for the server's admins (the admin
//! API and console list them). A report is only written; nothing is done automatically.

pub mod tables;

use std::sync::Arc;

use ruma::UserId;

pub use self::tables::{Report, Subject};
use crate::{
    db::{
        codec::{Be64, Json},
        Batch, Database,
    },
    error::{Error, Result},
    time::now_ms,
};

/// The longest reason kept (longer ones are refused, not cut).
pub const MAX_REASON_CHARS: usize = 10_000;

pub struct Reports {
    db: Arc<Database>,
}

impl Reports {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    /// Stores a report; answers its id.
    pub fn file(&self, reporter: &UserId, subject: Subject, reason: Option<String>) -> Result<u64> {
        if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(Error::invalid_param(format!("a reason is at most {MAX_REASON_CHARS} characters")));
        }
        let mut batch = Batch::new();
        let id = self.db.next_count(&mut batch);
        let report = Report { reporter: reporter.to_owned(), subject, reason, received_ts: now_ms() };
        self.db.tables.reports.reportid_report.insert(&mut batch, &Be64(id), &Json(report));
        self.db.commit(batch)?;
        Ok(id)
    }

    /// Every report, oldest first.
    pub fn list(&self) -> Result<Vec<(u64, Report)>> {
        self.db
            .tables
            .reports
            .reportid_report
            .iter()
            .map(|entry| entry.map(|(Be64(id), Json(report))| (id, report)).map_err(Error::from))
            .collect()
    }

    pub fn get(&self, id: u64) -> Result<Option<Report>> {
        Ok(self.db.tables.reports.reportid_report.get(&Be64(id))?.map(|Json(r)| r))
    }

    /// Deletes a report (an admin dealt with it); `false` when there was none.
    pub fn delete(&self, id: u64) -> Result<bool> {
        if self.get(id)?.is_none() {
            return Ok(false);
        }
        let mut batch = Batch::new();
        self.db.tables.reports.reportid_report.remove(&mut batch, &Be64(id));
        self.db.commit(batch)?;
        Ok(true)
    }
}
