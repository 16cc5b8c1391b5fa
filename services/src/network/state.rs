//! What the status component keeps for the server's lifetime: when the server started (its
//! uptime goes into the status document), the last SMTP probe, and the server notice batches.

use serde::{Deserialize, Serialize};

/// How a service this node depends on answered when last asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// `None` before the first probe.
    pub healthy: Option<bool>,
    pub checked_ts: Option<u64>,
    pub error: Option<String>,
}

/// A server notice sent to many accounts, in batches, and how far it got.
#[derive(Debug, Clone, Default)]
pub struct NoticeBatch {
    pub id: String,
    /// The admin who sent it.
    pub by: String,
    /// Who it goes to, in words.
    pub audience: String,
    pub started_ts: u64,
    pub total: usize,
    pub sent: usize,
    pub failed: usize,
    pub finished_ts: Option<u64>,
}

pub struct NetworkStatus {
    pub started_ms: u64,
    pub smtp: std::sync::Mutex<Option<ServiceHealth>>,
    /// Woken when an admin asks for a round of fetches now (the console's "refresh").
    pub refresh: tokio::sync::Notify,
    /// The notice batches since start-up, newest last (the last few kept).
    pub notice_batches: std::sync::Mutex<Vec<NoticeBatch>>,
}

impl Default for NetworkStatus {
    fn default() -> Self {
        Self {
            started_ms: crate::time::now_ms(),
            smtp: Default::default(),
            refresh: Default::default(),
            notice_batches: Default::default(),
        }
    }
}
